// The dashboard's Traffic recorder on a clock the test moves: the ring of the last requests (order and
// bound), per-route rates over the window of one-second buckets, what counts as an error, and that
// counters of routes without traffic in the window (deleted ones included) are dropped; the ring of the
// last TCP and passthrough connections, and passthrough routes kept out of the HTTP routes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RequestDone } from '../../src/controller/edge.js';
import type { Route } from '../../src/store/model.js';
import type { TcpConnectionDone } from '../../src/controller/tcp-connections.js';
import {
  MAX_SHOWN_HOST,
  RATE_WINDOW_S,
  RECENT_CONNECTIONS,
  RECENT_REQUESTS,
  routeKey,
  Traffic,
} from '../../src/controller/traffic.js';

function done(fields: Partial<RequestDone> = {}): RequestDone {
  return {
    kind: 'http',
    at: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    requestId: 'req',
    method: 'GET',
    host: 'a.test',
    path: '/',
    route: 'a.test',
    cluster: 'c1',
    status: 200,
    bytesIn: 0,
    bytesOut: 10,
    ms: 1.5,
    outcome: 'done',
    ...fields,
  };
}

/** A recorder on a clock that only moves when the test sets `clock.ms`. */
function recorder(): { traffic: Traffic; clock: { ms: number } } {
  const clock = { ms: 0 };
  return { traffic: new Traffic(() => clock.ms), clock };
}

const A: Route = { host: 'a.test', path: '/', cluster: 'c1', target: 'http://127.0.0.1:1' };
const A_API: Route = { host: 'a.test', path: '/api', cluster: 'c2', target: 'http://127.0.0.1:2' };

describe('the ring of recent requests', () => {
  test('is empty at first', () => {
    assert.deepEqual(recorder().traffic.recent(), []);
  });

  test(`keeps the last ${RECENT_REQUESTS}, newest first`, () => {
    const { traffic } = recorder();
    for (let i = 0; i < 3; i++) traffic.record(done({ requestId: `r${i}` }));
    assert.deepEqual(
      traffic.recent().map((r) => r.requestId),
      ['r2', 'r1', 'r0'],
    );
    for (let i = 3; i < 250; i++) traffic.record(done({ requestId: `r${i}` }));
    const ids = traffic.recent().map((r) => r.requestId);
    assert.equal(ids.length, RECENT_REQUESTS);
    assert.equal(ids[0], 'r249');
    assert.equal(ids.at(-1), `r${250 - RECENT_REQUESTS}`);
  });

  test('shows each request with a fixed shape: absent fields are null, the time is ISO 8601', () => {
    const { traffic } = recorder();
    traffic.record(
      done({ route: undefined, cluster: undefined, outcome: undefined, status: 404, reason: 'no route' }),
    );
    traffic.record(done({ kind: 'upgrade', status: 101, host: 'h'.repeat(5000) }));
    const [upgrade, refused] = traffic.recent();
    assert.deepEqual(refused, {
      at: '2026-01-02T03:04:05.006Z',
      requestId: 'req',
      kind: 'http',
      method: 'GET',
      host: 'a.test',
      path: '/',
      route: null,
      cluster: null,
      status: 404,
      ms: 1.5,
      bytesIn: 0,
      bytesOut: 10,
      outcome: null,
      reason: 'no route',
    });
    assert.equal(upgrade!.kind, 'upgrade');
    assert.equal(upgrade!.host, `${'h'.repeat(MAX_SHOWN_HOST)}…`, 'a huge Host header is cut');
  });
});

describe('rates', () => {
  test('count finished requests per route over the window, divided by the time it covers', () => {
    const { traffic, clock } = recorder();
    clock.ms = 500;
    for (let i = 0; i < 5; i++) traffic.record(done());
    clock.ms = 1500;
    traffic.record(done({ status: 502, outcome: 'failed' }));
    traffic.record(done({ status: 200, outcome: 'broken' }));
    traffic.record(done({ status: 0, outcome: 'client-aborted' }));
    traffic.record(done({ route: 'a.test/api', cluster: 'c2' }));

    clock.ms = 2000;
    let snap = traffic.snapshot([A, A_API]);
    assert.equal(snap.windowSeconds, RATE_WINDOW_S);
    // The recorder is 2 s old: the rate is over those 2 s, not the whole window.
    assert.deepEqual(snap.routes[0], { ...A, requests: 8, perSecond: 4, errors5xx: 1, failed: 1 });
    assert.deepEqual(snap.routes[1], { ...A_API, requests: 1, perSecond: 0.5, errors5xx: 0, failed: 0 });

    // Second 0 has left the window (seconds 1 to 10), which covers 9.6 s now.
    clock.ms = 10_600;
    snap = traffic.snapshot([A, A_API]);
    assert.deepEqual(snap.routes[0], { ...A, requests: 3, perSecond: 0.313, errors5xx: 1, failed: 1 });

    clock.ms = 11_000;
    snap = traffic.snapshot([A, A_API]);
    assert.deepEqual(snap.routes[0], { ...A, requests: 0, perSecond: 0, errors5xx: 0, failed: 0 });
    assert.equal(traffic.countedRoutes, 0, 'counters with nothing in the window are dropped');
  });

  test('a bucket reused one window later starts from zero', () => {
    const { traffic, clock } = recorder();
    clock.ms = 100;
    for (let i = 0; i < 7; i++) traffic.record(done());
    clock.ms = RATE_WINDOW_S * 1000 + 100; // the same bucket, the next round
    traffic.record(done());
    assert.equal(traffic.snapshot([A]).routes[0]!.requests, 1);
  });

  test('answers that failed: broken off, or never sent while the client waited', () => {
    const { traffic, clock } = recorder();
    clock.ms = 5000;
    traffic.record(done({ status: 0, outcome: 'broken' }));
    traffic.record(done({ status: 0, outcome: undefined }));
    traffic.record(done({ status: 0, outcome: 'client-aborted' }));
    traffic.record(done({ status: 504, outcome: 'failed' }));
    traffic.record(done({ status: 503, outcome: 'failed' }));
    traffic.record(done({ status: 500, outcome: 'done' }));
    traffic.record(done({ status: 404, outcome: 'done' }));
    const [a] = traffic.snapshot([A]).routes;
    assert.equal(a!.requests, 7);
    assert.equal(a!.errors5xx, 3);
    assert.equal(a!.failed, 2);
  });

  test('requests that matched no route are counted on their own line', () => {
    const { traffic, clock } = recorder();
    clock.ms = 3000;
    traffic.record(done({ route: undefined, status: 404 }));
    traffic.record(done({ route: undefined, status: 400 }));
    const snap = traffic.snapshot([A]);
    assert.deepEqual(snap.unrouted, { requests: 2, perSecond: 0.667, errors5xx: 0, failed: 0 });
    assert.equal(snap.routes[0]!.requests, 0);
  });

  test('the key of a route is its host, and its path prefix unless that is /', () => {
    assert.equal(routeKey(A), 'a.test');
    assert.equal(routeKey({ host: 'a.test' }), 'a.test');
    assert.equal(routeKey(A_API), 'a.test/api');
  });
});

describe('bounds', () => {
  test('only routes with traffic in the window hold counters; deleted routes are not shown', () => {
    const { traffic, clock } = recorder();
    clock.ms = 0;
    for (let i = 0; i < 1000; i++) traffic.record(done({ route: `r${i}.test` }));
    assert.equal(traffic.countedRoutes, 1000);
    // A new route's first request, a window later, drops the stale ones.
    clock.ms = RATE_WINDOW_S * 1000;
    traffic.record(done({ route: 'new.test' }));
    assert.equal(traffic.countedRoutes, 1);
    // The snapshot lists the route table as it is, nothing else.
    const snap = traffic.snapshot([A]);
    assert.deepEqual(
      snap.routes.map((r) => r.host),
      ['a.test'],
    );
  });

  test('recording allocates no new counters for a route already counted', () => {
    const { traffic, clock } = recorder();
    for (let i = 0; i < 10_000; i++) {
      clock.ms = i * 7;
      traffic.record(done({ route: i % 2 === 0 ? 'a.test' : 'a.test/api' }));
    }
    assert.equal(traffic.countedRoutes, 2);
    assert.equal(traffic.recent().length, RECENT_REQUESTS);
  });
});

function connection(fields: Partial<TcpConnectionDone> = {}): TcpConnectionDone {
  return {
    kind: 'tcp',
    route: '127.0.0.1:15432',
    client: '127.0.0.1:40000',
    cluster: 'c1',
    target: 'tcp://db:5432',
    at: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    ms: 12,
    outcome: 'done',
    bytesIn: 3,
    bytesOut: 4,
    ...fields,
  };
}

describe('the ring of recent TCP connections', () => {
  test(`keeps the last ${RECENT_CONNECTIONS}, newest first, apart from the requests`, () => {
    const { traffic } = recorder();
    assert.deepEqual(traffic.snapshot([]).connections, []);
    traffic.record(done());
    for (let i = 0; i < 250; i++) traffic.recordConnection(connection({ client: `127.0.0.1:${i}` }));
    const snap = traffic.snapshot([]);
    assert.equal(snap.requests.length, 1);
    assert.equal(snap.connections.length, RECENT_CONNECTIONS);
    assert.equal(snap.connections[0]!.client, '127.0.0.1:249');
    assert.equal(snap.connections.at(-1)!.client, `127.0.0.1:${250 - RECENT_CONNECTIONS}`);
    assert.deepEqual(snap.connections[0], {
      at: '2026-01-02T03:04:05.006Z',
      kind: 'tcp',
      client: '127.0.0.1:249',
      route: '127.0.0.1:15432',
      cluster: 'c1',
      target: 'tcp://db:5432',
      ms: 12,
      bytesIn: 3,
      bytesOut: 4,
      outcome: 'done',
    });
  });

  test('passthrough routes are no HTTP routes; tcpRoutes are shown as given', () => {
    const { traffic } = recorder();
    const pass: Route = {
      host: 'db.test',
      path: '/',
      cluster: 'c1',
      target: 'tcp://db:5432',
      tls: 'passthrough',
    };
    const tcp = {
      kind: 'tls-passthrough' as const,
      route: 'db.test',
      cluster: 'c1',
      target: 'tcp://db:5432',
      open: 1,
      connections: 2,
      refused: 3,
      bytesIn: 4,
      bytesOut: 5,
    };
    const snap = traffic.snapshot([A, pass], [tcp]);
    assert.deepEqual(
      snap.routes.map((r) => r.host),
      ['a.test'],
    );
    assert.deepEqual(snap.tcpRoutes, [tcp]);
  });
});
