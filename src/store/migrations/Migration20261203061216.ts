import { Migration } from '@mikro-orm/migrations';

export class Migration20261203061216 extends Migration {

  override name = 'Migration20261203061216';

  override up(): void | Promise<void> {
    this.addSql(`create table "audit_event" ("id" uuid not null, "tenant" varchar(64) not null, "at" timestamptz not null, "actor_id" varchar(128) not null, "action" varchar(64) not null, "room_id" uuid null, "target_id" varchar(128) null, "data" jsonb not null default '{}', primary key ("id"));`);
    this.addSql(`create index "audit_event_tenant_at_idx" on "audit_event" ("tenant", "at", "id");`);
    this.addSql(`alter table "chat_user" add column "erased_at" timestamptz null;`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop table if exists "audit_event" cascade;`);
    this.addSql(`alter table "chat_user" drop column "erased_at";`);
  }

}
