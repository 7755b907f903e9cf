// The tunnel registry: least-outstanding-streams picking, and a newer generation of an agent's tunnel
// slot replacing the stale one at once (docs/protocol.md §4, "Tunnel identity").
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Tunnel, TunnelRegistry } from '../../src/controller/tunnels.js';
import type { Session } from '../../src/tunnel/session.js';
import type { TunnelSlotId } from '../../src/tunnel/slot.js';

/** A tunnel over a stand-in session: only what the registry reads. */
function tunnel(
  agent: string,
  replica: string,
  slot: TunnelSlotId | undefined,
  session: Partial<Pick<Session, 'closed' | 'draining' | 'streamCount'>> = {},
  cluster = 'c1',
): Tunnel {
  const fake = { closed: false, draining: false, streamCount: 0, ...session } as Session;
  return { session: fake, cluster, agent, replica, ...(slot && { slot }), since: 0 };
}

describe('TunnelRegistry', () => {
  test('picks the live tunnel with the fewest streams, skipping draining, closed and excluded ones', () => {
    const r = new TunnelRegistry();
    const busy = tunnel('a', 'r1', undefined, { streamCount: 5 });
    const idle = tunnel('a', 'r2', undefined, { streamCount: 1 });
    const draining = tunnel('b', 'r1', undefined, { draining: true });
    const closed = tunnel('b', 'r2', undefined, { closed: true });
    for (const t of [busy, idle, draining, closed]) r.add(t);
    assert.equal(r.pick('c1'), idle);
    assert.equal(r.pick('c1', new Set([idle])), busy);
    assert.equal(r.pick('c1', new Set([idle, busy])), undefined);
    assert.equal(r.pick('other'), undefined);
  });

  test('a newer generation of a slot replaces the old tunnel, which leaves routing at once', () => {
    const r = new TunnelRegistry();
    const old = tunnel('a', 'r1', { index: 0, generation: 1 });
    const other = tunnel('a', 'r1', { index: 1, generation: 1 });
    assert.equal(r.add(old), undefined);
    assert.equal(r.add(other), undefined);
    const next = tunnel('a', 'r1', { index: 0, generation: 2 }, { streamCount: 3 });
    assert.equal(r.add(next), old);
    assert.deepEqual(r.all(), [other, next]);
    assert.deepEqual(r.size(), { tunnels: 2, slots: 2 });
    r.remove(old); // its close comes later: nothing changes
    assert.deepEqual(r.all(), [other, next]);
    r.remove(next);
    assert.deepEqual(r.size(), { tunnels: 1, slots: 1 });
  });

  test('an older generation arriving late replaces nothing', () => {
    const r = new TunnelRegistry();
    const current = tunnel('a', 'r1', { index: 0, generation: 5 });
    const late = tunnel('a', 'r1', { index: 0, generation: 4 });
    r.add(current);
    assert.equal(r.add(late), undefined);
    assert.deepEqual(r.all(), [current, late]);
    r.remove(late);
    assert.deepEqual(r.size(), { tunnels: 1, slots: 1 }, 'the current tunnel keeps its slot');
  });

  test('slots of other replicas, agents or clusters, and tunnels without a slot, never replace', () => {
    const r = new TunnelRegistry();
    const tunnels = [
      tunnel('a', 'r1', { index: 0, generation: 1 }),
      tunnel('a', 'r2', { index: 0, generation: 2 }),
      tunnel('b', 'r1', { index: 0, generation: 3 }),
      tunnel('a', 'r1', { index: 0, generation: 4 }, {}, 'c2'),
      tunnel('a', 'r1', undefined),
    ];
    for (const t of tunnels) assert.equal(r.add(t), undefined);
    assert.equal(r.all().length, 5);
    assert.deepEqual(r.size(), { tunnels: 5, slots: 4 });
  });
});

describe('TunnelRegistry.unavailableReason', () => {
  test('says whether no agent is connected or every one left is draining, counted by replica', () => {
    const r = new TunnelRegistry();
    assert.equal(r.unavailableReason('c1'), 'no agent of cluster c1 is connected');
    // One agent replica with two tunnels is one agent.
    r.add(tunnel('a', 'r1', { index: 0, generation: 1 }, { draining: true }));
    r.add(tunnel('a', 'r1', { index: 1, generation: 1 }, { draining: true }));
    r.add(tunnel('gone', 'r9', undefined, { closed: true }));
    assert.equal(r.pick('c1'), undefined);
    assert.equal(r.unavailableReason('c1'), 'the only agent of cluster c1 is draining');
    r.add(tunnel('a', 'r2', undefined, { draining: true }));
    assert.equal(r.unavailableReason('c1'), 'all 2 agents of cluster c1 are draining');
    assert.equal(r.unavailableReason('other'), 'no agent of cluster other is connected');
  });
});
