import { Migration } from '@mikro-orm/migrations';

export class Migration20261204184731 extends Migration {

  override name = 'Migration20261204184731';

  override up(): void | Promise<void> {
    // The grouped send's rows: no foreign key checks on message and room_event (their writers hold
    // the room's lock; deleteRoom deletes them), and no thread index entry for a message that is no reply.
    this.addSql(`alter table "message" drop constraint "message_room_id_foreign";`);
    this.addSql(`alter table "room_event" drop constraint "room_event_room_id_foreign";`);
    this.addSql(`drop index "message_reply_to_idx";`);
    this.addSql(`create index "message_reply_to_idx" on "message" ("reply_to_id", "seq") where "reply_to_id" is not null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "message_reply_to_idx";`);
    this.addSql(`create index "message_reply_to_idx" on "message" ("reply_to_id", "seq");`);
    this.addSql(`alter table "message" add constraint "message_room_id_foreign" foreign key ("room_id") references "room" ("id") on update no action on delete cascade;`);
    this.addSql(`alter table "room_event" add constraint "room_event_room_id_foreign" foreign key ("room_id") references "room" ("id") on update no action on delete cascade;`);
  }

}
