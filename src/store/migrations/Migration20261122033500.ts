import { Migration } from '@mikro-orm/migrations';

/** Retention: per-room override and the indexes the batched cleanup walks. */
export class Migration20261122033500 extends Migration {
  override name = 'Migration20261122033500';

  override up(): void | Promise<void> {
    this.addSql(`alter table "room" add column "retention_days" int null;`);
    this.addSql(`create index "message_created_at_idx" on "message" ("created_at");`);
    this.addSql(`create index "room_event_created_at_idx" on "room_event" ("created_at");`);
    this.addSql(`create index "inbox_event_created_at_idx" on "inbox_event" ("created_at");`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index if exists "inbox_event_created_at_idx";`);
    this.addSql(`drop index if exists "room_event_created_at_idx";`);
    this.addSql(`drop index if exists "message_created_at_idx";`);
    this.addSql(`alter table "room" drop column "retention_days";`);
  }
}
