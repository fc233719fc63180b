import { Migration } from '@mikro-orm/migrations';

export class Migration20261203053808 extends Migration {

  override name = 'Migration20261203053808';

  override up(): void | Promise<void> {
    this.addSql(`alter table "webhook_endpoint" alter column "secret" type varchar(255) using ("secret"::varchar(255));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "webhook_endpoint" alter column "secret" type varchar(100) using ("secret"::varchar(100));`);
  }

}
