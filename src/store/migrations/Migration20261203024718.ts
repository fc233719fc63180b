import { Migration } from '@mikro-orm/migrations';

/** Room lifecycle and public rooms (issue 5, 6): archived rooms, room visibility. */
export class Migration20261203024718 extends Migration {

  override name = 'Migration20261203024718';

  override up(): void | Promise<void> {
    this.addSql(`alter table "room" add "archived_at" timestamptz null, add "visibility" varchar(16) not null default 'private';`);
    this.addSql(`create index "room_tenant_visibility_idx" on "room" ("tenant", "visibility");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "room_tenant_visibility_idx";`);
    this.addSql(`alter table "room" drop column "archived_at", drop column "visibility";`);
  }

}
