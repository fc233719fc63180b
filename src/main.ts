import { createApp } from './app.js';
import { loadConfigOrExit } from './config.js';
import { createLogger } from './logger.js';

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, config.logPretty);
const app = await createApp(config, { log });
const url = await app.listen();
log.info(
  { url, database: app.db.embedded ? `embedded (${config.dataDir})` : 'postgresql', bus: app.bus.kind },
  `chat server listening on ${url} (tRPC at ${url}/trpc, WebSocket on the same path)`,
);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'shutting down');
  const timer = setTimeout(() => {
    log.error('shutdown timed out, exiting');
    process.exit(1);
  }, config.shutdownTimeoutMs);
  timer.unref();
  try {
    await app.close();
    process.exit(0);
  } catch (err) {
    log.error({ err }, 'shutdown failed');
    process.exit(1);
  }
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
