import { Migration } from '@mikro-orm/migrations';

export class Migration20261205000000 extends Migration {

  override name = 'Migration20261205000000';

  override up(): void | Promise<void> {
    // The full-text index's pending list merged in smaller, shorter steps (src/store/entities.ts,
    // `message_search_idx`). A storage parameter: no rebuild of the index.
    this.addSql(`alter index "message_search_idx" set (gin_pending_list_limit = 512);`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter index "message_search_idx" reset (gin_pending_list_limit);`);
  }

}
