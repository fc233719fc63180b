import { Migration } from '@mikro-orm/migrations';

/** Uploaded files (issue 15): one row per upload, its state, its preview. */
export class Migration20261203051657 extends Migration {

  override name = 'Migration20261203051657';

  override up(): void | Promise<void> {
    this.addSql(`create table "file" ("id" uuid not null, "tenant" varchar(64) not null, "room_id" uuid not null, "uploader_id" varchar(128) not null, "name" varchar(255) not null, "mime" varchar(127) not null, "size" bigint not null, "storage_key" varchar(200) not null, "state" varchar(16) not null default 'uploading', "message_id" uuid null, "width" int null, "height" int null, "preview" varchar(16) null, "attempts" int not null default 0, "lease_until" timestamptz null, "last_error" varchar(500) null, "created_at" timestamptz not null, "attached_at" timestamptz null, primary key ("id"));`);
    this.addSql(`create index "file_state_created_at_idx" on "file" ("state", "created_at");`);
    this.addSql(`create index "file_tenant_idx" on "file" ("tenant");`);
    this.addSql(`create index "file_message_idx" on "file" ("message_id");`);
    this.addSql(`create index "file_room_idx" on "file" ("room_id");`);
    this.addSql(`create index "file_preview_idx" on "file" ("preview");`);

    this.addSql(`alter table "file" add constraint "file_state_check" check ("state" in ('uploading', 'attached', 'deleting'));`);
    this.addSql(`alter table "file" add constraint "file_preview_check" check ("preview" in ('pending', 'ready', 'failed'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "file" cascade;`);
  }

}
