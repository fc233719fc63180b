/**
 * `npm run keys:reencrypt`: after a key rotation (a new key put first in MESSAGE_KEYS), seals every
 * encrypted body, earlier version and webhook secret with the new key, then prints which key ids
 * still hold rows (a key may leave MESSAGE_KEYS once it holds none). `--status` only prints that.
 * Safe while nodes serve traffic (with PostgreSQL; the embedded database takes one process at a
 * time, so there the server is stopped first), and safe to stop and run again (docs/SECURITY.md).
 */
import { loadConfigOrExit } from './config.js';
import { createLogger } from './logger.js';
import { Keyring } from './services/keyring.js';
import { MessageMapper } from './services/message-dto.js';
import { Rekeyer } from './services/rekey.js';
import { SecretBox } from './services/webhooks/secrets.js';
import { openDatabase } from './store/database.js';
import { Store } from './store/store.js';

const config = loadConfigOrExit();
const statusOnly = process.argv.includes('--status');
const log = createLogger(config.logLevel, config.logPretty);
const keyring = new Keyring(config.messageKeys);
if (!keyring.enabled) {
  console.error('MESSAGE_KEYS is not set: nothing is encrypted with it, nothing to re-encrypt');
  process.exit(1);
}
const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolMax: 2, migrate: false });
const refuse = () => Promise.reject(new Error('the re-encryption job writes no events'));
const mapper = new MessageMapper(keyring);
const store = new Store(
  db.orm,
  { publisher: { room: refuse, inbox: refuse }, toMessage: (row) => mapper.fromRow(row), onJobError: (err) => log.warn({ err }, 'after commit') },
  { preparedStatements: false },
);
const rekey = new Rekeyer(store, keyring, new SecretBox(keyring), log);
try {
  if (!statusOnly) {
    const report = await rekey.run();
    console.log(JSON.stringify({ report }));
  }
  console.log(JSON.stringify({ usage: await rekey.usage() }));
} finally {
  await db.close();
}
