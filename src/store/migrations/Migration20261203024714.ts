import { Migration } from '@mikro-orm/migrations';

/** Structured data: metadata on rooms and messages, cards on messages. */
export class Migration20261203024714 extends Migration {

  override name = 'Migration20261203024714';

  override up(): void | Promise<void> {
    this.addSql(`alter table "room" add "metadata" jsonb null;`);

    this.addSql(`alter table "message" add "metadata" jsonb null, add "card" jsonb null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "message" drop column "metadata", drop column "card";`);

    this.addSql(`alter table "room" drop column "metadata";`);
  }

}
