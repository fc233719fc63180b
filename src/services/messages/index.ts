import type { Counters, Observers } from '../../metrics.js';
import type { FileService } from '../files/index.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { InboxService } from '../inbox.js';
import type { Keyring } from '../keyring.js';
import type { RateLimits } from '../limits.js';
import type { MessageMapper } from '../message-dto.js';
import type { ReadRouting } from '../read-routing.js';
import { MessageChanges } from './change.js';
import { MessageReader } from './read.js';
import { MessageSender } from './send.js';

export { MessageChanges } from './change.js';
export { EDITS_DEFAULT_LIMIT, EDITS_MAX_LIMIT, type EditsInput, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, type HistoryInput, MessageReader } from './read.js';
export { MessageSender, type SendInput } from './send.js';

/** Messages by capability: sending (send.ts), changing sent ones (change.ts), reading (read.ts). */
export interface MessageServices {
  sender: MessageSender;
  changes: MessageChanges;
  reader: MessageReader;
}

/** What the message services use. */
export interface MessageServiceDeps {
  store: Store;
  access: AccessService;
  inbox: InboxService;
  mapper: MessageMapper;
  keyring: Keyring;
  limits: RateLimits;
  counters: Counters;
  /** Told of every group of plain sends written. */
  observers: Pick<Observers, 'sendGroup'>;
  files: FileService;
  /** Wakes the file worker (after a delete handed it files to remove). */
  wakeFiles: () => void;
  /** Where history, threads and search read (a replica or the primary). */
  reads: ReadRouting;
}

export function createMessageServices(d: MessageServiceDeps): MessageServices {
  return {
    sender: new MessageSender(d.store, d.access, d.mapper, d.keyring, d.limits, d.counters, d.files, d.observers),
    changes: new MessageChanges(d.store, d.access, d.inbox, d.mapper, d.keyring, d.limits, d.wakeFiles),
    reader: new MessageReader(d.store, d.access, d.mapper, d.reads),
  };
}
