import { adminRouter } from '../routers/admin.js';
import { authRouter } from '../routers/auth.js';
import { chatRouter } from '../routers/chat.js';
import { fileRouter } from '../routers/file.js';
import { inboxRouter } from '../routers/inbox.js';
import { presenceRouter } from '../routers/presence.js';
import { receiptRouter } from '../routers/receipt.js';
import { roomRouter } from '../routers/room.js';
import { signalRouter } from '../routers/signal.js';
import { videoRouter } from '../routers/video.js';
import { webhookRouter } from '../routers/webhook.js';
import { deviceRouter } from '../routers/device.js';
import { notifyRouter } from '../routers/notify.js';
import { createCallerFactory, router } from './init.js';

export const appRouter = router({
  auth: authRouter,
  room: roomRouter,
  chat: chatRouter,
  receipt: receiptRouter,
  presence: presenceRouter,
  inbox: inboxRouter,
  video: videoRouter,
  signal: signalRouter,
  webhook: webhookRouter,
  file: fileRouter,
  device: deviceRouter,
  notify: notifyRouter,
  admin: adminRouter,
});

/** The type frontends import (type-only) to get the whole API typed end to end. */
export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
