import { Migration } from '@mikro-orm/migrations';

export class Migration20261203054653 extends Migration {

  override name = 'Migration20261203054653';

  override up(): void | Promise<void> {
    this.addSql(`create table "notify_digest" ("tenant" varchar(64) not null, "user_id" varchar(128) not null, "since" timestamptz not null, "due_at" timestamptz not null, "lease_until" timestamptz null, "attempts" int not null default 0, "last_error" varchar(500) null, primary key ("tenant", "user_id"));`);
    this.addSql(`create index "notify_digest_due_idx" on "notify_digest" ("due_at");`);

    this.addSql(`create table "notify_preference" ("tenant" varchar(64) not null, "user_id" varchar(128) not null, "email" varchar(16) not null default 'digest', "push" boolean not null default true, "quiet_start" varchar(5) null, "quiet_end" varchar(5) null, "quiet_time_zone" varchar(64) null, "updated_at" timestamptz not null, primary key ("tenant", "user_id"));`);

    this.addSql(`create table "notify_push" ("tenant" varchar(64) not null, "user_id" varchar(128) not null, "room_key" varchar(36) not null, "room_id" uuid null, "pending" int not null default 0, "kind" varchar(32) not null, "message_id" uuid null, "message_seq" bigint null, "from_user" varchar(128) null, "title" varchar(300) null, "url" varchar(2000) null, "due_at" timestamptz not null, "last_sent_at" timestamptz null, "lease_until" timestamptz null, "attempts" int not null default 0, "last_error" varchar(500) null, "updated_at" timestamptz not null, primary key ("tenant", "user_id", "room_key"));`);
    this.addSql(`create index "notify_push_due_idx" on "notify_push" ("due_at");`);

    this.addSql(`create table "notify_room_preference" ("room_id" uuid not null, "user_id" varchar(128) not null, "tenant" varchar(64) not null, "level" varchar(16) not null default 'mentions', "mute_until" timestamptz null, "updated_at" timestamptz not null, primary key ("room_id", "user_id"));`);
    this.addSql(`create index "notify_room_preference_user_idx" on "notify_room_preference" ("tenant", "user_id");`);

    this.addSql(`create table "push_device" ("id" uuid not null, "tenant" varchar(64) not null, "user_id" varchar(128) not null, "kind" varchar(16) not null, "endpoint" varchar(2000) not null, "p256dh" varchar(200) not null, "auth" varchar(100) not null, "label" varchar(100) null, "created_at" timestamptz not null, "last_push_at" timestamptz null, primary key ("id"));`);
    this.addSql(`create index "push_device_user_idx" on "push_device" ("tenant", "user_id");`);
    this.addSql(`alter table "push_device" add constraint "push_device_endpoint_unique" unique ("endpoint");`);

    this.addSql(`alter table "chat_user" add "email" varchar(254) null;`);

    this.addSql(`alter table "notify_room_preference" add constraint "notify_room_preference_level_check" check ("level" in ('all', 'mentions', 'none'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "notify_digest" cascade;`);
    this.addSql(`drop table if exists "notify_preference" cascade;`);
    this.addSql(`drop table if exists "notify_push" cascade;`);
    this.addSql(`drop table if exists "notify_room_preference" cascade;`);
    this.addSql(`drop table if exists "push_device" cascade;`);

    this.addSql(`alter table "chat_user" drop column "email";`);
  }

}
