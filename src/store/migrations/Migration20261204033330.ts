import { Migration } from '@mikro-orm/migrations';

export class Migration20261204033330 extends Migration {

  override name = 'Migration20261204033330';

  override up(): void | Promise<void> {
    this.addSql(`alter table "notify_digest" add "after_room_id" uuid null, add "after_seq" bigint null, add "queued" bigint not null default '0';`);
    this.addSql(`create or replace function "notify_digest_queued_fn"() returns trigger as $$ begin update notify_digest set queued = queued + 1, since = least(since, new.since), after_room_id = case when new.since < since then null else after_room_id end, after_seq = case when new.since < since then null else after_seq end where tenant = new.tenant and user_id = new.user_id; return new; end; $$ language plpgsql;`);
    this.addSql(`create trigger "queued" BEFORE INSERT on "notify_digest" for each ROW execute function "notify_digest_queued_fn"();`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop trigger if exists "queued" on "notify_digest";`);
    this.addSql(`drop function if exists "notify_digest_queued_fn"();`);
    this.addSql(`alter table "notify_digest" drop column "after_room_id", drop column "after_seq", drop column "queued";`);
  }

}
