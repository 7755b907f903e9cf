// The agent's route publisher (agent/route-publisher.ts) on real tunnel sessions over TCP, facing a
// controller side written here: one that answers as docs/protocol.md §12 says, and hostile or old ones
// that refuse the stream, reset it, or answer what is no reply. The snapshots come from a plain source
// object; test/e2e/discovery.test.ts runs the same path with real discovery and a real controller.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { RETRY, RoutePublisher, type RouteSource } from '../../src/agent/route-publisher.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import {
  decodeRouteSnapshot,
  type DiscoveredRoute,
  encodeRoutesReply,
  MAX_SNAPSHOT_BYTES,
  readMessage,
  type RefusedRoute,
  type RouteSnapshot,
} from '../../src/protocol/route-snapshot.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { captureLog } from '../helpers/log-capture.js';
import { sessionPair, type SessionPair } from '../helpers/session-pair.js';
import { transportPair } from '../helpers/transport-pair.js';
import { waitFor, within } from '../helpers/wait.js';

function route(host: string, object: string, source: 'ingress' | 'service' = 'ingress'): DiscoveredRoute {
  return { host, path: '/', target: 'http://web.shop.svc.cluster.local:80', source, object };
}

/** Stands in for Discovery: its current snapshot, and the status writes asked of it. */
class Source implements RouteSource {
  routes: RouteSnapshot = [];
  readonly writes: [string, string][] = [];
  failWrites = false;

  async writeStatus(object: string, address: string): Promise<boolean> {
    if (this.failWrites) throw new Error('HTTP 403');
    this.writes.push([object, address]);
    return true;
  }
}

type Answer = (stream: Stream, snapshot: RouteSnapshot) => void;

let pairs: SessionPair[] = [];
afterEach(async () => {
  await Promise.all(pairs.map((p) => p.close()));
  pairs = [];
});

/** A session pair whose controller side answers each control stream with `answer`. */
async function controllerSide(answer: Answer): Promise<{ pair: SessionPair; received: RouteSnapshot[] }> {
  const received: RouteSnapshot[] = [];
  const pair = await sessionPair(
    transportPair('tcp'),
    {},
    {
      onStream: (stream) => {
        stream.on('error', () => {});
        void readMessage(stream, MAX_SNAPSHOT_BYTES).then((body) => {
          const decoded = decodeRouteSnapshot(body.toString('utf8'));
          assert.ok(decoded.ok);
          received.push(decoded.routes);
          answer(stream, decoded.routes);
        });
      },
    },
  );
  pairs.push(pair);
  return { pair, received };
}

const reply =
  (refused: (routes: RouteSnapshot) => RefusedRoute[], address?: string): Answer =>
  (stream, routes) => {
    const no = refused(routes);
    stream.end(
      encodeRoutesReply({ stored: routes.length - no.length, refused: no, ...(address ? { address } : {}) }),
    );
  };

describe('the route publisher', () => {
  test('sends the snapshot, logs refusals once, and writes the status of each Ingress taken whole', async () => {
    const refuseOther: (routes: RouteSnapshot) => RefusedRoute[] = (routes) =>
      routes
        .filter((r) => r.host.endsWith('.other.test'))
        .map((r) => ({ host: r.host, path: r.path, object: `${r.source} ${r.object}`, reason: 'not yours' }));
    const { pair, received } = await controllerSide(reply(refuseOther, 'edge.example.test'));
    const log = captureLog('debug');
    const source = new Source();
    const publisher = new RoutePublisher(source, () => [pair.client], log.logger);
    source.routes = [
      route('a.example.test', 'shop/a'),
      // One of shop/b's two routes is refused: its status is left alone.
      route('b.example.test', 'shop/b'),
      route('b.other.test', 'shop/b'),
      route('s.example.test', 'shop/s', 'service'),
    ];
    publisher.snapshot();
    await within(publisher.idle(), 30_000, 'the send');
    assert.deepEqual(received, [source.routes]);
    assert.deepEqual(source.writes, [['shop/a', 'edge.example.test']]);
    assert.equal(publisher.stats.refused, 1);
    const [line] = log.events('discovery-refused');
    assert.deepEqual(
      [line!.host, line!.object, line!.reason],
      ['b.other.test', 'ingress shop/b', 'not yours'],
    );
    // The second and the hundredth snapshot: still refused, never logged again.
    for (let i = 2; i <= 100; i++) {
      source.routes = [
        ...source.routes.filter((r) => !r.host.startsWith('n')),
        route(`n${i}.example.test`, `shop/n${i}`),
      ];
      publisher.snapshot();
      if (i === 2) await publisher.idle();
    }
    await within(publisher.idle(), 30_000, 'the sends');
    assert.equal(log.events('discovery-refused').length, 1);
    // A burst of snapshots queued behind a send goes out as one: the last.
    assert.ok(received.length < 100, `${received.length} sends for 99 snapshots`);
    assert.ok(received.at(-1)!.some((r) => r.object === 'shop/n100'));
    assert.equal(publisher.stats.failures, 0);
  });

  test('a new tunnel gets the current snapshot; nothing is sent before the first snapshot', async () => {
    const { pair, received } = await controllerSide(reply(() => []));
    const source = new Source();
    const publisher = new RoutePublisher(source, () => [pair.client], captureLog().logger);
    publisher.tunnelUp(pair.client);
    await publisher.idle();
    assert.equal(received.length, 0);
    source.routes = [route('a.example.test', 'shop/a')];
    publisher.snapshot();
    publisher.tunnelUp(pair.client);
    await within(publisher.idle(), 30_000, 'the sends');
    assert.equal(received.length, 2);
    // No address in the reply: no status written.
    assert.deepEqual(source.writes, []);
  });

  for (const [what, answer, err] of [
    [
      'refuses the stream (an older controller)',
      (s: Stream) => s.reset(ErrorCode.REFUSED_STREAM, 'the controller accepts no streams'),
      /REFUSED_STREAM/,
    ],
    ['resets it', (s: Stream) => s.reset(ErrorCode.PROTOCOL_ERROR, 'no'), /PROTOCOL_ERROR/],
    ['answers what is no JSON', (s: Stream) => s.end('<html>'), /routes reply is not JSON/],
    ['answers without a count', (s: Stream) => s.end('{"refused":[]}'), /no "stored" count/],
    ['answers a bad address', (s: Stream) => s.end('{"stored":1,"refused":[],"address":"a b"}'), /address/],
    ['answers too much', (s: Stream) => s.end(Buffer.alloc(MAX_SNAPSHOT_BYTES + 1, 0x20)), /over \d+ bytes/],
  ] as const) {
    test(`a controller that ${what}: logged, nothing written, the next snapshot still goes`, async () => {
      let first = true;
      const { pair, received } = await controllerSide((stream, routes) => {
        if (first) {
          first = false;
          return answer(stream);
        }
        reply(() => [], 'edge.example.test')(stream, routes);
      });
      const log = captureLog('debug');
      const source = new Source();
      const publisher = new RoutePublisher(source, () => [pair.client], log.logger);
      source.routes = [route('a.example.test', 'shop/a')];
      publisher.snapshot();
      await within(publisher.idle(), 30_000, 'the send');
      assert.equal(publisher.stats.failures, 1);
      assert.match(String(log.events('discovery-send-failed')[0]!.err), err);
      assert.deepEqual(source.writes, []);
      publisher.snapshot();
      await within(publisher.idle(), 30_000, 'the second send');
      assert.equal(received.length, 2);
      assert.deepEqual(source.writes, [['shop/a', 'edge.example.test']]);
    });
  }

  test('a send the controller could not store is tried again with backoff, without a new snapshot', async () => {
    let answered = 0;
    const { pair, received } = await controllerSide((stream, routes) => {
      // The first two fail as a controller whose store is away answers; the third is stored.
      if (++answered <= 2) return stream.reset(ErrorCode.INTERNAL_ERROR, 'the snapshot could not be stored');
      reply(() => [], 'edge.example.test')(stream, routes);
    });
    const log = captureLog('debug');
    const source = new Source();
    const publisher = new RoutePublisher(source, () => [pair.client], log.logger);
    source.routes = [route('a.example.test', 'shop/a')];
    publisher.snapshot();
    await waitFor('the retried send to be stored', () => publisher.stats.sent === 1, 30_000);
    await within(publisher.idle(), 30_000, 'the status writes');
    assert.equal(received.length, 3);
    assert.equal(publisher.stats.failures, 2);
    assert.deepEqual(
      log.events('discovery-send-failed').map((l) => l.retryInMs),
      [RETRY.firstMs, RETRY.firstMs * 2],
    );
    assert.deepEqual(received[2], source.routes, 'the retry carries the current snapshot');
    assert.deepEqual(source.writes, [['shop/a', 'edge.example.test']]);
    assert.equal(publisher.retrying, 0);
    publisher.close();
  });

  test('a retry sends the snapshot current when it goes, and a newer send replaces a waiting retry', async () => {
    let answered = 0;
    const { pair, received } = await controllerSide((stream, routes) => {
      if (++answered === 1) return stream.reset(ErrorCode.INTERNAL_ERROR, 'store away');
      reply(() => [])(stream, routes);
    });
    const source = new Source();
    const publisher = new RoutePublisher(source, () => [pair.client], captureLog().logger);
    source.routes = [route('a.example.test', 'shop/a')];
    publisher.snapshot();
    await within(publisher.idle(), 30_000, 'the failed send');
    assert.equal(publisher.retrying, 1);
    source.routes = [route('a.example.test', 'shop/a'), route('b.example.test', 'shop/b')];
    publisher.snapshot();
    await within(publisher.idle(), 30_000, 'the newer send');
    assert.equal(publisher.retrying, 0, 'the newer send took the waiting retry');
    assert.deepEqual(received.at(-1), source.routes);
    publisher.close();
  });

  test('a controller that refuses the stream is not asked again on that tunnel; close() drops a waiting retry', async () => {
    const { pair } = await controllerSide((stream) =>
      stream.reset(ErrorCode.REFUSED_STREAM, 'the controller accepts no streams'),
    );
    const log = captureLog('debug');
    const source = new Source();
    source.routes = [route('a.example.test', 'shop/a')];
    const publisher = new RoutePublisher(source, () => [pair.client], log.logger);
    publisher.snapshot();
    await within(publisher.idle(), 30_000, 'the send');
    assert.equal(publisher.retrying, 0);
    assert.equal(log.events('discovery-send-failed')[0]!.retryInMs, undefined);

    const failing = await controllerSide((stream) => stream.reset(ErrorCode.INTERNAL_ERROR, 'store away'));
    const other = new RoutePublisher(source, () => [failing.pair.client], captureLog().logger);
    other.snapshot();
    await within(other.idle(), 30_000, 'the failed send');
    assert.equal(other.retrying, 1);
    other.close();
    assert.equal(other.retrying, 0);
  });

  test('a status that cannot be written is logged, and the others are still written', async () => {
    const { pair } = await controllerSide(reply(() => [], 'edge.example.test'));
    const log = captureLog('debug');
    const source = new Source();
    source.failWrites = true;
    const publisher = new RoutePublisher(source, () => [pair.client], log.logger);
    source.routes = [route('a.example.test', 'shop/a'), route('b.example.test', 'shop/b')];
    publisher.snapshot();
    await within(publisher.idle(), 30_000, 'the send');
    assert.equal(log.events('discovery-status-failed').length, 2);
  });

  test('no tunnel up: nothing is sent, and a closed or draining session is never picked', async () => {
    const { pair, received } = await controllerSide(reply(() => []));
    const source = new Source();
    source.routes = [route('a.example.test', 'shop/a')];
    const publisher = new RoutePublisher(source, () => [], captureLog().logger);
    publisher.snapshot();
    await publisher.idle();
    const closing = pair.client.close(1000);
    publisher.tunnelUp(pair.client);
    await publisher.idle();
    await closing;
    assert.equal(received.length, 0);
  });
});
