import { Migration } from '@mikro-orm/migrations';

export class Migration20261204032611 extends Migration {

  override name = 'Migration20261204032611';

  override up(): void | Promise<void> {
    this.addSql(`create table "job_lease" ("name" varchar(64) not null, "owner" varchar(200) not null, "lease_until" timestamptz not null, primary key ("name"));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "job_lease" cascade;`);
  }

}
