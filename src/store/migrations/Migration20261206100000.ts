import { Migration } from '@mikro-orm/migrations';

export class Migration20261206100000 extends Migration {

  override name = 'Migration20261206100000';

  override up(): void | Promise<void> {
    // The kind a push row's claim was taken with, while the claim holds (src/store/notify.ts, `claimPushes`):
    // a node that takes the row over from a claim whose node died puts it back with the items folded in since.
    this.addSql(`alter table "notify_push" add column "claim_kind" varchar(32) null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "notify_push" drop column "claim_kind";`);
  }

}
