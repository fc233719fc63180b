import { Migration } from '@mikro-orm/migrations';

export class Migration20261204164140 extends Migration {

  override name = 'Migration20261204164140';

  override up(): void | Promise<void> {
    this.addSql(`create table "video_removal" ("id" bigserial primary key, "room_id" uuid not null, "tenant" varchar(64) not null, "user_id" varchar(128) not null, "reason" varchar(16) not null, "attempts" int not null default 0, "next_attempt_at" timestamptz not null, "lease_until" timestamptz null, "last_error" varchar(500) null, "created_at" timestamptz not null);`);
    this.addSql(`create index "video_removal_due_idx" on "video_removal" ("next_attempt_at");`);
    this.addSql(`alter table "video_removal" add constraint "video_removal_room_user_key" unique ("room_id", "user_id");`);

    this.addSql(`alter table "video_removal" add constraint "video_removal_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);
    this.addSql(`alter table "video_removal" add constraint "video_removal_reason_check" check ("reason" in ('banned', 'removed', 'refused'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "video_removal" cascade;`);
  }

}
