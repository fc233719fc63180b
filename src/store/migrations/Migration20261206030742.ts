import { Migration } from '@mikro-orm/migrations';

export class Migration20261206030742 extends Migration {

  override name = 'Migration20261206030742';

  override up(): void | Promise<void> {
    // inbox.notify's clientId (src/store/entities.ts, InboxEvent). Nullable columns without a default:
    // no rewrite of the table; the partial index holds no existing row.
    this.addSql(`alter table "inbox_event" add "sender_id" varchar(128) null, add "client_id" uuid null, add "request_hash" varchar(64) null;`);
    this.addSql(`create unique index "inbox_event_client_id_unique" on "inbox_event" ("tenant", "sender_id", "client_id", "user_id") where "client_id" is not null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "inbox_event_client_id_unique";`);
    this.addSql(`alter table "inbox_event" drop column "sender_id", drop column "client_id", drop column "request_hash";`);
  }

}
