import { Migration } from '@mikro-orm/migrations';

export class Migration20261206080000 extends Migration {

  override name = 'Migration20261206080000';

  override up(): void | Promise<void> {
    // The meeting expiry sweep's index (src/store/entities.ts, Meeting): partial, over the meetings not ended.
    this.addSql(`create index "meeting_open_expiry_idx" on "meeting" ("provider", "expires_at", "id") where "status" <> 'ended';`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop index "meeting_open_expiry_idx";`);
  }

}
