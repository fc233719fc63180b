import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { appendMessageRows, fileServer, insertEndpoint, insertRoom, kysely, newMessage, type NewMessage } from './fixture.js';

/**
 * The grouped send statement and the one-message statement (src/store/hot/append-messages.ts) keep
 * the same rules: every outcome, through both. A group of one without the notification queue runs
 * the one-message statement; the same message with a companion in another room runs the grouped one.
 */
const srv = fileServer('append');
const ctx = () => ({ orm: srv.app.db.orm, prepared: true });
const sql = <R = Record<string, unknown>>(text: string, params: unknown[] = []) => srv.env.sql<R>(text, params);

const newRoom = (tenant: string, opts: { archived?: boolean } = {}) => insertRoom(srv.env, tenant, opts);
const message = newMessage;

const lastSeq = async (roomId: string) => Number((await sql<{ last_seq: string }>('select last_seq from room where id = $1', [roomId]))[0]?.last_seq);
const rowsOf = async (id: string) => ({
  messages: (await sql('select seq from message where id = $1', [id])).length,
  events: (await sql('select seq from room_event where message_id = $1', [id])).length,
});

const forms = [
  { form: 'one-message statement', write: (m: NewMessage) => appendMessageRows(ctx(), [m], null).then((r) => ({ ...r, outcome: r.outcomes[0]! })) },
  {
    form: 'grouped statement',
    write: async (m: NewMessage) => {
      const companion = await newRoom(m.tenant);
      const r = await appendMessageRows(ctx(), [m, message(companion.id, m.tenant)], null);
      expect(r.outcomes[1]!.kind).toBe('new');
      return { ...r, outcome: r.outcomes[0]! };
    },
  },
];

for (const { form, write } of forms) {
  describe(`append: ${form}`, () => {
    it('writes a new message with the next seq: its row and its room log row, and the row it answers is what was written', async () => {
      const tenant = `t-${randomUUID()}`;
      const room = await newRoom(tenant);
      const m = message(room.id, tenant, { accessVersion: room.accessVersion });
      const { outcome, hooked } = await write(m);
      expect(outcome.kind).toBe('new');
      if (outcome.kind !== 'new') return;
      expect(outcome.row).toMatchObject({ id: m.id, room_id: room.id, seq: 1, sender_id: 'sender', body: 'hello', attachments: m.attachments, metadata: m.metadata, mentions: [] });
      expect(outcome.row.created_at).toBeInstanceOf(Date);
      expect(hooked).toBe(false);
      expect(await lastSeq(room.id)).toBe(1);
      expect(await rowsOf(m.id)).toEqual({ messages: 1, events: 1 });
      const [stored] = await sql<{ metadata: unknown; attachments: unknown; created_at: Date }>('select metadata, attachments, created_at from message where id = $1', [m.id]);
      expect(stored).toEqual({ metadata: m.metadata, attachments: m.attachments, created_at: outcome.row.created_at });
    });

    it('a repeat of a clientId writes nothing and uses up no seq', async () => {
      const tenant = `t-${randomUUID()}`;
      const room = await newRoom(tenant);
      const first = message(room.id, tenant);
      expect((await write(first)).outcome.kind).toBe('new');
      const again = message(room.id, tenant, { clientId: first.clientId });
      expect((await write(again)).outcome).toEqual({ kind: 'repeat' });
      expect(await lastSeq(room.id)).toBe(1);
      expect(await rowsOf(again.id)).toEqual({ messages: 0, events: 0 });
    });

    it("stale when the room's access version moved since the check; nothing written", async () => {
      const tenant = `t-${randomUUID()}`;
      const room = await newRoom(tenant);
      const m = message(room.id, tenant, { accessVersion: room.accessVersion - 1 });
      expect((await write(m)).outcome).toEqual({ kind: 'stale' });
      expect(await lastSeq(room.id)).toBe(0);
      expect(await rowsOf(m.id)).toEqual({ messages: 0, events: 0 });
    });

    it('archived and gone rooms take no message', async () => {
      const tenant = `t-${randomUUID()}`;
      const archived = await newRoom(tenant, { archived: true });
      const a = message(archived.id, tenant);
      expect((await write(a)).outcome).toEqual({ kind: 'archived' });
      expect(await lastSeq(archived.id)).toBe(0);
      const g = message(randomUUID(), tenant);
      expect((await write(g)).outcome).toEqual({ kind: 'gone' });
      expect(await rowsOf(a.id)).toEqual({ messages: 0, events: 0 });
      expect(await rowsOf(g.id)).toEqual({ messages: 0, events: 0 });
    });

    it("writes the webhook outbox row of the tenant's endpoint and says so", async () => {
      const tenant = `t-${randomUUID()}`;
      const room = await newRoom(tenant);
      await insertEndpoint(kysely(srv.app.db.orm.em.fork()), { id: randomUUID(), tenant, url: 'https://hooks.example.com/x', events: ['message.new'], description: null, secret: 's' });
      const m = message(room.id, tenant);
      const { outcome, hooked } = await write(m);
      expect(outcome.kind).toBe('new');
      expect(hooked).toBe(true);
      expect(await sql('select event_id, event_type, seq from webhook_delivery where room_id = $1', [room.id])).toEqual([
        { event_id: `${room.id}:1`, event_type: 'message.new', seq: expect.anything() },
      ]);
    });
  });
}

describe('the message table as the statements write it', () => {
  it('merges its full-text pending list at 512 kB (a merge holds the send that triggers it: shorter ones, a shorter tail)', async () => {
    const [idx] = await sql<{ reloptions: string[] | null }>(`select reloptions from pg_class where relname = 'message_search_idx'`);
    expect(idx?.reloptions).toEqual(['gin_pending_list_limit=512']);
  });
});
