import { Migration } from '@mikro-orm/migrations';

export class Migration20261122031149 extends Migration {

  override name = 'Migration20261122031149';

  override up(): void | Promise<void> {
    this.addSql(`create table "inbox_cursor" ("tenant" varchar(64) not null, "user_id" varchar(128) not null, "last_seq" bigint not null default '0', primary key ("tenant", "user_id"));`);

    this.addSql(`create table "inbox_event" ("tenant" varchar(64) not null, "user_id" varchar(128) not null, "seq" bigint not null, "type" varchar(32) not null, "data" jsonb not null default '{}', "created_at" timestamptz not null, primary key ("tenant", "user_id", "seq"));`);

    this.addSql(`create table "reaction" ("message_id" uuid not null, "user_id" varchar(128) not null, "emoji" varchar(64) not null, "created_at" timestamptz not null, primary key ("message_id", "user_id", "emoji"));`);

    this.addSql(`create table "message_edit" ("id" uuid not null, "message_id" uuid not null, "body" text null, "key_id" varchar(32) null, "editor_id" varchar(128) not null, "replaced_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "message_edit_message_idx" on "message_edit" ("message_id", "replaced_at");`);

    this.addSql(`create table "room_ban" ("room_id" uuid not null, "user_id" varchar(128) not null, "banned_by" varchar(128) not null, "created_at" timestamptz not null, primary key ("room_id", "user_id"));`);

    this.addSql(`alter table "room" add "encrypted" boolean not null default false;`);

    this.addSql(`alter table "message" add "key_id" varchar(32) null, add "reply_count" int not null default 0, add "last_reply_at" timestamptz null, add "deleted_by" varchar(128) null;`);
    this.addSql(`create index "message_reply_to_idx" on "message" ("reply_to_id", "seq");`);

    this.addSql(`alter table "membership" add "last_read_at" timestamptz null, add "muted_until" timestamptz null;`);

    this.addSql(`alter table "reaction" add constraint "reaction_message_id_foreign" foreign key ("message_id") references "message" ("id") on delete cascade;`);

    this.addSql(`alter table "message_edit" add constraint "message_edit_message_id_foreign" foreign key ("message_id") references "message" ("id") on delete cascade;`);

    this.addSql(`alter table "room_ban" add constraint "room_ban_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);
    // Full-text search: deleted and encrypted messages never match (the vector is null for them).
    this.addSql(`alter table "message" add column "search" tsvector generated always as (case when "deleted_at" is null and "key_id" is null then to_tsvector('simple', coalesce("body", '')) else null end) stored;`);
    this.addSql(`create index "message_search_idx" on "message" using gin ("search");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index if exists "message_search_idx";`);
    this.addSql(`alter table "message" drop column if exists "search";`);
    this.addSql(`drop table if exists "inbox_cursor" cascade;`);
    this.addSql(`drop table if exists "inbox_event" cascade;`);
    this.addSql(`drop table if exists "reaction" cascade;`);
    this.addSql(`drop table if exists "message_edit" cascade;`);
    this.addSql(`drop table if exists "room_ban" cascade;`);

    this.addSql(`alter table "membership" drop column "last_read_at", drop column "muted_until";`);

    this.addSql(`drop index "message_reply_to_idx";`);
    this.addSql(`alter table "message" drop column "key_id", drop column "reply_count", drop column "last_reply_at", drop column "deleted_by";`);

    this.addSql(`alter table "room" drop column "encrypted";`);
  }

}
