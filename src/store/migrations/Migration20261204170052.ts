import { Migration } from '@mikro-orm/migrations';

export class Migration20261204170052 extends Migration {

  override name = 'Migration20261204170052';

  override up(): void | Promise<void> {
    // Trigram indexes for room.directory's name/topic search. pg_trgm is a trusted extension (PostgreSQL
    // 13+): the database's owner may create it without superuser rights; the embedded database loads it.
    this.addSql(`create extension if not exists pg_trgm;`);
    this.addSql(`create index "room_directory_idx" on "room" ("tenant", "name", "id") where "visibility" = 'public' and "archived_at" is null;`);
    this.addSql(`create index "room_directory_name_trgm_idx" on "room" using gin ("name" gin_trgm_ops) where "visibility" = 'public' and "archived_at" is null;`);
    this.addSql(`create index "room_directory_topic_trgm_idx" on "room" using gin ("topic" gin_trgm_ops) where "visibility" = 'public' and "archived_at" is null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "room_directory_idx";`);
    this.addSql(`drop index "room_directory_name_trgm_idx";`);
    this.addSql(`drop index "room_directory_topic_trgm_idx";`);
  }

}
