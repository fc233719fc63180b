import { Migration } from '@mikro-orm/migrations';

/** Video meetings (issue 4): meetings, their participants, and processed webhook event ids. */
export class Migration20261122041500 extends Migration {
  override name = 'Migration20261122041500';

  override up(): void | Promise<void> {
    this.addSql(`create table "meeting" ("id" uuid not null, "tenant" varchar(64) not null, "room_id" uuid not null, "created_by" varchar(128) not null, "title" varchar(200) null, "provider" varchar(16) not null, "provider_room_id" varchar(128) null, "url" varchar(1000) not null, "status" varchar(16) not null default 'scheduled', "created_at" timestamptz not null, "started_at" timestamptz null, "ended_at" timestamptz null, "ended_by" varchar(128) null, "expires_at" timestamptz not null, primary key ("id"), constraint "meeting_status_check" check ("status" in ('scheduled', 'live', 'ended')));`);
    this.addSql(`create index "meeting_room_idx" on "meeting" ("room_id", "created_at");`);
    this.addSql(`alter table "meeting" add constraint "meeting_room_id_foreign" foreign key ("room_id") references "room" ("id") on delete cascade;`);

    this.addSql(`create table "meeting_participant" ("meeting_id" uuid not null, "session_id" varchar(128) not null, "user_id" varchar(128) not null, "name" varchar(200) null, "joined_at" timestamptz not null, "left_at" timestamptz null, primary key ("meeting_id", "session_id"));`);
    this.addSql(`alter table "meeting_participant" add constraint "meeting_participant_meeting_id_foreign" foreign key ("meeting_id") references "meeting" ("id") on delete cascade;`);

    this.addSql(`create table "video_webhook_event" ("provider" varchar(16) not null, "event_id" varchar(200) not null, "received_at" timestamptz not null, primary key ("provider", "event_id"));`);
    this.addSql(`create index "video_webhook_event_received_at_idx" on "video_webhook_event" ("received_at");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "video_webhook_event" cascade;`);
    this.addSql(`drop table if exists "meeting_participant" cascade;`);
    this.addSql(`drop table if exists "meeting" cascade;`);
  }
}
