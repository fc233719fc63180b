import { Migration } from '@mikro-orm/migrations';

/** Outgoing webhooks: tenants' endpoints and the delivery outbox. */
export class Migration20261203025941 extends Migration {

  override name = 'Migration20261203025941';

  override up(): void | Promise<void> {
    this.addSql(`create table "webhook_endpoint" ("id" uuid not null, "tenant" varchar(64) not null, "url" varchar(2000) not null, "events" text[] not null default '{}', "description" varchar(500) null, "secret" varchar(100) not null, "enabled" boolean not null default true, "failing_since" timestamptz null, "created_at" timestamptz not null, "updated_at" timestamptz not null, primary key ("id"));`);
    this.addSql(`create index "webhook_endpoint_tenant_idx" on "webhook_endpoint" ("tenant");`);

    this.addSql(`create table "webhook_delivery" ("id" bigserial primary key, "endpoint_id" uuid not null, "tenant" varchar(64) not null, "room_id" uuid not null, "seq" bigint null, "event_id" varchar(100) not null, "event_type" varchar(32) not null, "data" jsonb null, "status" varchar(16) not null default 'pending', "attempts" int not null default 0, "next_attempt_at" timestamptz not null, "lease_until" timestamptz null, "last_error" varchar(500) null, "last_status_code" int null, "created_at" timestamptz not null, "delivered_at" timestamptz null);`);
    this.addSql(`create index "webhook_delivery_due_idx" on "webhook_delivery" ("status", "next_attempt_at");`);
    this.addSql(`create index "webhook_delivery_endpoint_room_idx" on "webhook_delivery" ("endpoint_id", "room_id", "id");`);
    this.addSql(`create index "webhook_delivery_endpoint_idx" on "webhook_delivery" ("endpoint_id", "id");`);
    this.addSql(`create index "webhook_delivery_created_at_idx" on "webhook_delivery" ("created_at");`);

    this.addSql(`alter table "webhook_delivery" add constraint "webhook_delivery_endpoint_id_foreign" foreign key ("endpoint_id") references "webhook_endpoint" ("id") on delete cascade;`);
    this.addSql(`alter table "webhook_delivery" add constraint "webhook_delivery_status_check" check ("status" in ('pending', 'delivered', 'failed'));`);
  }

  override down(): void | Promise<void> {
    this.addSql(`alter table "webhook_delivery" drop constraint "webhook_delivery_endpoint_id_foreign";`);

    this.addSql(`drop table if exists "webhook_endpoint" cascade;`);
    this.addSql(`drop table if exists "webhook_delivery" cascade;`);
  }

}
