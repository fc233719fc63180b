import { randomUUID } from 'node:crypto';
import type { Actor } from '../domain/actor.js';
import type { MessageDto } from '../domain/events.js';
import type { Tx } from '../store/tx.js';

/**
 * Writes a `system` message (a kind users cannot send) with its own seq, in the caller's
 * transaction. Used for joins, leaves, removals, bans, renames and meetings: changes an archived
 * room still takes (its members and settings can be tidied up), so their notice is written there
 * too. Messages sent with `chat.send` (a service token's `kind: 'system'` included) are not.
 */
export function systemMessage(tx: Tx, actor: Actor, roomId: string, body: string): Promise<MessageDto> {
  return tx.appendMessage(
    {
      id: randomUUID(),
      roomId,
      tenant: actor.tenant,
      senderId: actor.id,
      clientId: null,
      body,
      keyId: null,
      kind: 'system',
      attachments: [],
      replyToId: null,
      mentions: [],
    },
    { evenIfArchived: true },
  );
}
