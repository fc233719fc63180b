import { Migration } from '@mikro-orm/migrations';

export class Migration20261122030345 extends Migration {

  override name = 'Migration20261122030345';

  override up(): void | Promise<void> {
    this.addSql(`create table "room" ("id" uuid not null, "tenant" varchar(64) not null, "kind" varchar(16) not null, "name" varchar(200) not null, "topic" varchar(1000) null, "key" varchar(200) null, "direct_key" varchar(300) null, "created_by" varchar(128) not null, "last_seq" bigint not null default '0', "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`alter table "room" add constraint "room_tenant_key_unique" unique ("tenant", "key");`);
    this.addSql(`alter table "room" add constraint "room_tenant_direct_key_unique" unique ("tenant", "direct_key");`);

    this.addSql(`create table "message" ("id" uuid not null, "room_id" uuid not null, "tenant" varchar(64) not null, "seq" bigint not null, "sender_id" varchar(128) not null, "client_id" uuid null, "body" text null, "kind" varchar(16) not null default 'text', "attachments" jsonb not null default '[]', "reply_to_id" uuid null, "mentions" jsonb not null default '[]', "created_at" timestamptz not null, "edited_at" timestamptz null, "deleted_at" timestamptz null, primary key ("id"));`);
    this.addSql(`alter table "message" add constraint "message_room_seq_unique" unique ("room_id", "seq");`);
    this.addSql(`alter table "message" add constraint "message_sender_client_id_unique" unique ("tenant", "sender_id", "client_id");`);

    this.addSql(`create table "membership" ("room_id" uuid not null, "user_id" varchar(128) not null, "role" varchar(16) not null, "joined_at" timestamptz not null, "last_read_seq" bigint not null default '0', primary key ("room_id", "user_id"));`);
    this.addSql(`create index "membership_user_idx" on "membership" ("user_id");`);

    this.addSql(`create table "room_event" ("room_id" uuid not null, "seq" bigint not null, "type" varchar(32) not null, "message_id" uuid null, "data" jsonb not null default '{}', "created_at" timestamptz not null, primary key ("room_id", "seq"));`);

    this.addSql(`create table "chat_user" ("tenant" varchar(64) not null, "id" varchar(128) not null, "name" varchar(200) not null, "roles" text[] not null default '{}', "created_at" timestamptz not null, "last_seen_at" timestamptz not null, primary key ("tenant", "id"));`);

    this.addSql(`alter table "message" add constraint "message_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);

    this.addSql(`alter table "membership" add constraint "membership_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);

    this.addSql(`alter table "room_event" add constraint "room_event_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "message" drop constraint "message_room_id_foreign";`);
    this.addSql(`alter table "membership" drop constraint "membership_room_id_foreign";`);
    this.addSql(`alter table "room_event" drop constraint "room_event_room_id_foreign";`);

    this.addSql(`drop table if exists "room" cascade;`);
    this.addSql(`drop table if exists "message" cascade;`);
    this.addSql(`drop table if exists "membership" cascade;`);
    this.addSql(`drop table if exists "room_event" cascade;`);
    this.addSql(`drop table if exists "chat_user" cascade;`);
  }

}
