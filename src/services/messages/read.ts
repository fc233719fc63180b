import type { Actor } from '../../domain/actor.js';
import { badRequest } from '../../domain/errors.js';
import type { MessageDto, MessageEditDto, SearchHit } from '../../domain/events.js';
import { editsPage, encryptedRoomCount, historyPage, messageOfTenant, searchMessages, threadPage, usesSearchIndex } from '../../store/messages.js';
import type { Db } from '../../store/database.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import { pageLimit } from '../page.js';
import type { MessageMapper } from '../message-dto.js';
import { buildSnippet, HEADLINE_OPTIONS, MARK_START, MARK_STOP } from '../snippet.js';
import type { ReadRouting } from '../read-routing.js';
import { keyOf } from '../../domain/ids.js';
import { readable } from './shared.js';

export interface HistoryInput {
  roomId: string;
  beforeSeq?: number | null | undefined;
  afterSeq?: number | null | undefined;
  limit?: number | null | undefined;
}

export interface ThreadInput {
  messageId: string;
  afterSeq?: number | null | undefined;
  limit?: number | null | undefined;
}

export interface SearchInput {
  query: string;
  roomId?: string | null | undefined;
  limit?: number | null | undefined;
}

export interface EditsInput {
  messageId: string;
  beforeId?: string | null | undefined;
  afterId?: string | null | undefined;
  limit?: number | null | undefined;
}

export const HISTORY_DEFAULT_LIMIT = 50;
export const HISTORY_MAX_LIMIT = 100;
const SEARCH_DEFAULT_LIMIT = 20;
/** Versions per `edits` page (a message keeps at most MAX_EDITS_PER_MESSAGE of them: by default, one page). */
export const EDITS_DEFAULT_LIMIT = 100;
export const EDITS_MAX_LIMIT = 1000;

/** Reading messages: history pages, threads, edit histories, full-text search. */
export class MessageReader {
  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly mapper: MessageMapper,
    private readonly reads: ReadRouting,
  ) {}

  /**
   * A page of history, always in ascending seq. No cursor: the newest page. `beforeSeq` pages back,
   * `afterSeq` pages forward; both together give the messages strictly between them.
   */
  async history(actor: Actor, input: HistoryInput): Promise<{ messages: MessageDto[]; hasMore: boolean }> {
    const limit = input.limit ?? HISTORY_DEFAULT_LIMIT;
    if (limit < 1 || limit > HISTORY_MAX_LIMIT) throw badRequest(`limit must be between 1 and ${HISTORY_MAX_LIMIT}`);
    const access = await this.access.requireMember(actor, input.roomId);
    // Never older than the room as the access check saw it on the primary, nor than a named cursor.
    const atLeast = Math.max(access.room.lastSeq, input.afterSeq ?? 0, input.beforeSeq ?? 0);
    return this.reads.room(input.roomId, atLeast, async (db) => {
      const page = await historyPage(db, { roomId: input.roomId, beforeSeq: input.beforeSeq, afterSeq: input.afterSeq, limit });
      return { messages: await this.mapper.many(db, page.rows, actor.id), hasMore: page.hasMore };
    });
  }

  /** The replies to a message (ascending seq), with the root. */
  async thread(actor: Actor, input: ThreadInput): Promise<{ root: MessageDto; replies: MessageDto[]; hasMore: boolean }> {
    const limit = input.limit ?? HISTORY_DEFAULT_LIMIT;
    const { row, access } = await readable(this.access, actor, await messageOfTenant(this.store.db(), actor.tenant, input.messageId));
    const atLeast = Math.max(access.room.lastSeq, input.afterSeq ?? 0);
    return this.reads.room(row.room_id, atLeast, async (db) => {
      const page = await threadPage(db, input.messageId, input.afterSeq ?? 0, limit);
      const [root] = await this.mapper.many(db, [row], actor.id);
      return { root: root!, replies: await this.mapper.many(db, page.rows, actor.id), hasMore: page.hasMore };
    });
  }

  /**
   * A page of the earlier versions of a message, always oldest first (empty for a deleted message),
   * paged like `history`: no cursor, the newest `limit` (default EDITS_DEFAULT_LIMIT, at most
   * EDITS_MAX_LIMIT); `beforeId` pages back, `afterId` forward (ids of versions of this message,
   * BAD_REQUEST otherwise); both together give the versions strictly between them.
   */
  async edits(actor: Actor, input: EditsInput): Promise<MessageEditDto[]> {
    const limit = pageLimit(input.limit, EDITS_DEFAULT_LIMIT, EDITS_MAX_LIMIT);
    const { messageId } = input;
    const db = this.store.db();
    const { row } = await readable(this.access, actor, await messageOfTenant(db, actor.tenant, messageId));
    if (row.deleted_at) return [];
    const rows = await editsPage(db, { messageId, beforeId: input.beforeId, afterId: input.afterId, limit });
    if (!rows) throw badRequest('beforeId and afterId must be ids of earlier versions of this message');
    return rows.map((r) => ({
      id: r.id,
      body: this.mapper.body(r.body, r.key_id, { roomId: row.room_id, messageId }),
      editorId: r.editor_id,
      replacedAt: r.replaced_at,
    }));
  }

  /**
   * Full-text search over the rooms the caller belongs to, or over the one room `roomId` it reads
   * (a support agent's support room too, as its history), ranked, with a highlighted snippet.
   * Deleted messages never match; encrypted rooms are skipped (and counted in the answer).
   */
  async search(actor: Actor, input: SearchInput): Promise<{ hits: SearchHit[]; skippedEncryptedRooms: number }> {
    const limit = input.limit ?? SEARCH_DEFAULT_LIMIT;
    const roomId = input.roomId ?? null;
    const access = roomId ? await this.access.requireMember(actor, roomId) : null;
    if (!(await usesSearchIndex(this.store.db(), input.query))) {
      throw badRequest('a search needs at least one word to look for (excluded words alone, like -word, cannot be searched)');
    }
    // One room: never older than the room as the access check saw it; every room: than the caller's last write.
    const read = <T>(fn: (db: Db) => Promise<T>) =>
      access ? this.reads.room(access.room.id, access.room.lastSeq, fn) : this.reads.user(keyOf(actor.tenant, actor.id), fn);
    return read(async (db) => this.searchOn(db, actor, input.query, roomId, limit));
  }

  private async searchOn(db: Db, actor: Actor, query: string, roomId: string | null, limit: number): Promise<{ hits: SearchHit[]; skippedEncryptedRooms: number }> {
    const rows = await searchMessages(db, {
      query,
      tenant: actor.tenant,
      userId: actor.id,
      roomId,
      limit,
      highlight: { options: HEADLINE_OPTIONS, strip: MARK_START + MARK_STOP },
    });
    const skipped = await encryptedRoomCount(db, actor.tenant, actor.id, roomId);
    const messages = await this.mapper.many(db, rows, actor.id);
    const hits = rows.map((r, i) => ({
      message: messages[i]!,
      roomId: r.room_id,
      roomName: r.room_name,
      rank: r.rank,
      snippet: buildSnippet(r.marked),
    }));
    return { hits, skippedEncryptedRooms: skipped };
  }
}
