/**
 * Who may see whose presence: `presence.get` answers for the users whose presence the caller's room
 * streams carry. A support agent reads the tenant's support rooms without a membership and gets
 * their customers' `presence` events there, so `presence.get` answers for those customers too; a
 * user the caller may not see (another tenant's, one of a room the agent cannot read, one of a support
 * room the agent is banned from) is left out exactly like an unknown user.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, clientFor, fileServer, recordEvents, uuid } from './fixture.js';

const t = fileServer('presence_review');

describe('presence.get for support agents', () => {
  it("answers for the customers of the support rooms the agent reads, as the room's stream does; others stay hidden like unknown users", async () => {
    const u = uuid().slice(0, 8);
    const [customer, banner, groupie, agent] = ['cust', 'bann', 'grp', 'agent'].map((n) => `${n}-${u}`) as [string, string, string, string];
    // Set up server-side (no connection): the customer comes online only when the agent listens.
    const as = (id: string, tenant = 'default') => callerFor(t.app, actor(id, tenant));
    await using ac = clientFor(t.url, agent, { roles: ['support'] });
    const ticket = await as(customer).room.create({ kind: 'support', name: 'My order is late' });
    const shut = await as(banner).room.create({ kind: 'support', name: 'Refund' });
    await as(banner).room.ban({ roomId: shut.id, userId: agent });
    await as(groupie).room.create({ kind: 'group', name: 'private group' });
    // A customer of another tenant, in a support room there.
    const [acme, far] = [`acme-${u}`, `far-${u}`];
    await as(far, acme).room.create({ kind: 'support', name: 'elsewhere' });

    // The agent's stream of the ticket carries the customer's presence.
    using rec = recordEvents(ac, { roomId: ticket.id });
    await rec.ready();
    await using live = clientFor(t.url, customer, { ws: true });
    expect((await live.trpc.auth.me.query()).id).toBe(customer);
    expect(await rec.next('presence', (e) => e.userId === customer)).toMatchObject({ roomId: ticket.id, userId: customer, status: 'online' });

    // presence.get says the same.
    expect(await ac.trpc.presence.get.query({ userIds: [customer] })).toEqual([{ userId: customer, status: 'online', lastSeenAt: expect.any(Date), version: expect.any(Number) }]);
    // A support room the agent is banned from, a group room, an unknown user: all left out alike.
    const unknown = `nobody-${u}`;
    const answer = await ac.trpc.presence.get.query({ userIds: [customer, banner, groupie, far, unknown, agent] });
    expect(answer.map((s) => s.userId).sort()).toEqual([agent, customer].sort());
    for (const hidden of [banner, groupie, far]) {
      expect(await ac.trpc.presence.get.query({ userIds: [hidden] })).toEqual(await ac.trpc.presence.get.query({ userIds: [unknown] }));
    }
    expect(await ac.trpc.presence.get.query({ userIds: [unknown] })).toEqual([]);
    // The other tenant's agent: its own tenant's customer, none of this one's.
    await using acmeAgent = clientFor(t.url, agent, { tenant: acme, roles: ['support'] });
    expect((await acmeAgent.trpc.presence.get.query({ userIds: [customer, banner, groupie, far] })).map((s) => s.userId)).toEqual([far]);
    // Without the support role, the support room's customer is a stranger.
    await using plain = clientFor(t.url, `plain-${u}`);
    expect(await plain.trpc.presence.get.query({ userIds: [customer] })).toEqual([]);
    rec.unsubscribe();
  });
});
