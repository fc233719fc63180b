import { Migration } from '@mikro-orm/migrations';

export class Migration20261206084404 extends Migration {

  override name = 'Migration20261206084404';

  override up(): void | Promise<void> {
    // The meetings of deleted rooms whose join tokens may still be valid (src/store/entities.ts, DeletedMeeting).
    this.addSql(`create table "deleted_meeting" ("meeting_id" uuid not null, "provider" varchar(16) not null, "tenant" varchar(64) not null, "room_id" uuid not null, "keep_until" timestamptz not null, primary key ("meeting_id"));`);
    this.addSql(`create index "deleted_meeting_keep_until_idx" on "deleted_meeting" ("keep_until");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "deleted_meeting" cascade;`);
  }

}
