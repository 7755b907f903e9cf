// The Redis store against a real redis-server: the Store contract (test/store/contract.ts), then what
// only a shared store has: two controllers' stores seeing each other's changes through pub/sub, seeds
// from two sources racing without deleting each other's entries, claims racing to one value, and an
// outage: every call rejects fast with StoreUnavailable, health() says why, and a reset event follows
// the reconnection.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { openRedisStore, type RedisStore } from '../../src/store/redis.js';
import { type StoreChange, StoreUnavailable } from '../../src/store/store.js';
import { RedisServer } from '../helpers/redis.js';
import { EVENT_MS, scaled, waitFor } from '../helpers/wait.js';
import { H1, H2, route, storeContract } from './contract.js';

let redis: RedisServer;
const open: RedisStore[] = [];

before(async () => {
  redis = await RedisServer.start();
});
after(async () => {
  await Promise.allSettled(open.map((s) => s.close()));
  await redis?.stop();
});

async function openStore(): Promise<RedisStore> {
  const store = await openRedisStore(
    { kind: 'redis', url: redis.url },
    { connectTimeoutMs: scaled(EVENT_MS) },
  );
  open.push(store);
  return store;
}

/** Empties Redis, and closes the stores of earlier tests, which would otherwise seed it again. */
async function flush(): Promise<void> {
  await Promise.all(open.splice(0).map((s) => s.close()));
  const raw = new Redis(redis.url, { lazyConnect: true });
  await raw.connect();
  await raw.flushall();
  raw.disconnect();
}

storeContract('redis', {
  async fresh() {
    await flush();
    return { store: await openStore(), another: openStore };
  },
});

/** Resolves with the first change `store` reports that `match` accepts; rejects after `ms`. */
function next(store: RedisStore, match: (c: StoreChange) => boolean, ms: number): Promise<StoreChange> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no matching change within ${ms} ms`));
    }, ms);
    const stop = store.watch((c) => {
      if (!match(c)) return;
      clearTimeout(timer);
      stop();
      resolve(c);
    });
  });
}

describe('redis only', () => {
  test('two stores on one Redis hear each other within 1 s, and their own changes once', async () => {
    await flush();
    const a = await openStore();
    const b = await openStore();
    const seenA: StoreChange[] = [];
    a.watch((c) => seenA.push(c));
    for (const [writer, reader] of [
      [a, b],
      [b, a],
    ] as const) {
      const name = `from-${writer === a ? 'a' : 'b'}`;
      const started = Date.now();
      const heard = next(reader, (c) => c.kind === 'cluster' && c.name === name, scaled(EVENT_MS));
      await writer.addCluster(name);
      assert.deepEqual(await heard, { kind: 'cluster', op: 'add', name });
      const ms = Date.now() - started;
      assert.ok(ms < scaled(1_000), `the change took ${ms} ms to reach the other store`);
    }
    // A route added through b is in a's view at once (it reads Redis), and a's own event came once.
    await b.addRoute({ ...route, cluster: 'from-b' });
    await waitFor('a hears the route', () => seenA.some((c) => c.kind === 'route'));
    assert.deepEqual(
      (await a.listRoutes()).map((r) => r.host),
      [route.host],
    );
    assert.equal(seenA.filter((c) => c.kind === 'cluster' && c.name === 'from-b').length, 1);
    assert.equal(seenA.filter((c) => c.kind === 'cluster' && c.name === 'from-a').length, 1);
  });

  test('two sources seeding in parallel, 10 rounds, never delete each other entries', async () => {
    await flush();
    const a = await openStore();
    const b = await openStore();
    const seedOf = (who: string, hash: string) => ({
      clusters: [
        { name: who, hashes: [hash] },
        { name: 'shared', hashes: [] },
      ],
      routes: [
        { ...route, host: `${who}.example.test`, cluster: who },
        { ...route, host: 'shared.example.test', cluster: 'shared' },
      ],
    });
    for (let round = 0; round < 10; round++) {
      await Promise.all([a.seed(seedOf('ca', H1), 'ctl-a'), b.seed(seedOf('cb', H2), 'ctl-b')]);
      assert.deepEqual(
        (await a.listClusters()).map((c) => c.name),
        ['ca', 'cb', 'shared'],
        `round ${round}`,
      );
      assert.deepEqual(
        (await b.listRoutes()).map((r) => r.host),
        ['ca.example.test', 'cb.example.test', 'shared.example.test'],
        `round ${round}`,
      );
      assert.deepEqual((await a.activeTokens()).map((t) => t.hash).sort(), [H1, H2], `round ${round}`);
    }
    // A drops everything: only B's entries and the shared ones stay.
    await a.seed({ clusters: [], routes: [] }, 'ctl-a');
    assert.deepEqual(
      (await b.listClusters()).map((c) => c.name),
      ['cb', 'shared'],
    );
  });

  test('claim races between two stores agree on one value', async () => {
    await flush();
    const a = await openStore();
    const b = await openStore();
    for (let i = 0; i < 20; i++) {
      const [x, y] = await Promise.all([a.claim(`race-${i}`, 'a'), b.claim(`race-${i}`, 'b')]);
      assert.equal(x, y);
      assert.ok(x === 'a' || x === 'b');
    }
  });

  test('Redis killed: health says why, calls reject StoreUnavailable fast; back: reset, writes work', async () => {
    await flush();
    const store = await openStore();
    await store.seed({ clusters: [{ name: 'seeded', hashes: [H1] }], routes: [] }, 'ctl-a');
    await store.addCluster('before');
    assert.equal(await store.claim('admin-token-hash', 'digest-1'), 'digest-1');
    const events: StoreChange[] = [];
    store.watch((c) => events.push(c));
    await redis.kill();
    await waitFor('health to report the outage', () => !store.health().ok);
    const health = store.health();
    assert.ok(!health.ok && /unreachable/.test(health.reason), JSON.stringify(health));
    for (const call of [
      () => store.addCluster('during'),
      () => store.listRoutes(),
      () => store.getCluster('before'),
      () => store.seed({ clusters: [], routes: [] }, 'ctl-a'),
      () => store.claim('k', 'v'),
    ]) {
      const started = Date.now();
      await assert.rejects(call(), StoreUnavailable);
      const ms = Date.now() - started;
      assert.ok(ms < 2_000, `a call took ${ms} ms to fail`);
    }
    assert.equal(events.length, 0);
    await redis.restart();
    await waitFor('health to recover', () => store.health().ok, EVENT_MS);
    await waitFor('a reset event', () => events.some((c) => c.kind === 'reset'));
    assert.deepEqual(events.at(-1), { kind: 'reset' });
    assert.equal(events.filter((c) => c.kind === 'reset').length, 1);
    // The restarted Redis kept nothing (no persistence here): the store put back its seed and its
    // claims before the reset, so the YAML's entries are there again; the API-made cluster is lost.
    // Writes work again.
    await store.addCluster('after');
    assert.deepEqual(
      (await store.listClusters()).map((c) => c.name),
      ['after', 'seeded'],
    );
    assert.deepEqual(await store.activeTokens(), [{ cluster: 'seeded', hash: H1 }]);
    assert.equal(await store.claim('admin-token-hash', 'digest-2'), 'digest-1');
  });
});
