import { Migration } from '@mikro-orm/migrations';

export class Migration20261206070000 extends Migration {

  override name = 'Migration20261206070000';

  override up(): void | Promise<void> {
    // Data only: webhook deliveries' `last_error` kept a snippet of the endpoint's answer, which
    // could echo the request (message bodies, an encrypted room's in plain text). The sender keeps
    // no answer text now (src/services/webhooks/sender.ts); the rows written before lose theirs.
    this.addSql(`update "webhook_delivery" set "last_error" = 'HTTP ' || coalesce("last_status_code"::text, '?') || ' (body not kept)' where "last_error" like 'HTTP %: %';`);
  }

  override down(): void | Promise<void> {
    // The snippets are gone for good.
  }

}
