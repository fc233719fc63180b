import { Migration } from '@mikro-orm/migrations';

export class Migration20261203140426 extends Migration {

  override name = 'Migration20261203140426';

  override up(): void | Promise<void> {
    this.addSql(`alter table "room" add "access_version" bigint not null default '0', add "access_tx" bigint null;`);
    this.addSql(`create or replace function "room_access_version_fn"() returns trigger as $$ begin new.access_version := old.access_version + 1; return new; end; $$ language plpgsql;`);
    this.addSql(`create trigger "access_version" BEFORE UPDATE on "room" for each ROW
  when (((old.archived_at IS DISTINCT FROM new.archived_at) OR ((old.name)::text IS DISTINCT FROM (new.name)::text) OR ((old.kind)::text IS DISTINCT FROM (new.kind)::text) OR (old.encrypted IS DISTINCT FROM new.encrypted))) execute function "room_access_version_fn"();`);

    this.addSql(`create or replace function "membership_access_version_fn"() returns trigger as $$ begin update room set access_version = access_version + 1, access_tx = pg_current_xact_id()::text::bigint where id = case when tg_op = 'DELETE' then old.room_id else new.room_id end and access_tx is distinct from pg_current_xact_id()::text::bigint; return null; end; $$ language plpgsql;`);
    this.addSql(`create trigger "access_version" AFTER INSERT OR DELETE on "membership" for each ROW execute function "membership_access_version_fn"();`);
    this.addSql(`create or replace function "membership_access_version_change_fn"() returns trigger as $$ begin update room set access_version = access_version + 1, access_tx = pg_current_xact_id()::text::bigint where id = case when tg_op = 'DELETE' then old.room_id else new.room_id end and access_tx is distinct from pg_current_xact_id()::text::bigint; return null; end; $$ language plpgsql;`);
    this.addSql(`create trigger "access_version_change" AFTER UPDATE on "membership" for each ROW
  when ((((old.role)::text IS DISTINCT FROM (new.role)::text) OR (old.muted_until IS DISTINCT FROM new.muted_until))) execute function "membership_access_version_change_fn"();`);

    this.addSql(`create or replace function "room_ban_access_version_fn"() returns trigger as $$ begin update room set access_version = access_version + 1, access_tx = pg_current_xact_id()::text::bigint where id = case when tg_op = 'DELETE' then old.room_id else new.room_id end and access_tx is distinct from pg_current_xact_id()::text::bigint; return null; end; $$ language plpgsql;`);
    this.addSql(`create trigger "access_version" AFTER INSERT OR DELETE on "room_ban" for each ROW execute function "room_ban_access_version_fn"();`);
  }

  override down(): void | Promise<void> {
    this.addSql(`drop trigger if exists "access_version" on "membership";`);
    this.addSql(`drop function if exists "membership_access_version_fn"();`);
    this.addSql(`drop trigger if exists "access_version_change" on "membership";`);
    this.addSql(`drop function if exists "membership_access_version_change_fn"();`);

    this.addSql(`drop trigger if exists "access_version" on "room";`);
    this.addSql(`drop function if exists "room_access_version_fn"();`);
    this.addSql(`alter table "room" drop column "access_version", drop column "access_tx";`);

    this.addSql(`drop trigger if exists "access_version" on "room_ban";`);
    this.addSql(`drop function if exists "room_ban_access_version_fn"();`);
  }

}
