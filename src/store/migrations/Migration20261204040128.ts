import { Migration } from '@mikro-orm/migrations';

export class Migration20261204040128 extends Migration {

  override name = 'Migration20261204040128';

  override up(): void | Promise<void> {
    this.addSql(`alter table "membership" add "receipt_seq" bigint not null default '0';`);
    // Until now one position served both: the receipts start where it is.
    this.addSql(`update "membership" set "receipt_seq" = "last_read_seq" where "last_read_seq" <> 0;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "membership" drop column "receipt_seq";`);
  }

}
