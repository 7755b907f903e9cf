// The drain walks every public front end alike: each is told to stop accepting before the tunnels
// are, to close its long-lived connections when the grace period ends and to cut them
// UPGRADE_CLOSE_MS later, and is closed at the end, in the order the front ends were listed.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import type { PublicListener } from '../../src/controller/public-listener.js';
import { type Running, shutdown, UPGRADE_CLOSE_MS } from '../../src/controller/shutdown.js';
import { TunnelRegistry } from '../../src/controller/tunnels.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { within } from '../helpers/wait.js';

const pairs: SessionPair[] = [];

after(async () => {
  for (const p of pairs) await p.close();
});

/** A front end that only records what it was told, into the shared `calls`. */
class FakeListener implements PublicListener {
  readonly url: string;
  readonly #calls: string[];
  readonly #upgraded: number;

  constructor(name: string, calls: string[], upgraded: number) {
    this.url = `fake://${name}`;
    this.#calls = calls;
    this.#upgraded = upgraded;
  }

  #record(what: string): void {
    this.#calls.push(`${this.url.slice('fake://'.length)}.${what}`);
  }

  startDrain(): void {
    this.#record('startDrain');
  }

  closeUpgraded(): number {
    this.#record('closeUpgraded');
    return this.#upgraded;
  }

  destroyUpgraded(): void {
    this.#record('destroyUpgraded');
  }

  close(): Promise<void> {
    this.#record('close');
    return Promise.resolve();
  }
}

/** A logger whose lines land in `lines`, parsed. */
function capturingLogger(lines: Record<string, unknown>[]): pino.Logger {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return pino({ level: 'info' }, sink);
}

async function registryWithOneTunnel(): Promise<TunnelRegistry> {
  const pair = await sessionPair(async () => {
    const { a, b } = duplexPair();
    return { client: a, server: b, close: async () => {} };
  });
  pairs.push(pair);
  const registry = new TunnelRegistry();
  registry.add({ session: pair.server, cluster: 'c1', agent: 'a', replica: 'r1', since: 0 });
  return registry;
}

function running(
  calls: string[],
  registry: TunnelRegistry,
  requests: Running['requests'],
  upgraded: [number, number],
): Running {
  return {
    frontEnds: [new FakeListener('http', calls, upgraded[0]), new FakeListener('tcp', calls, upgraded[1])],
    requests,
    registry,
    tunnels: { stopAccepting: () => calls.push('tunnels.stopAccepting') },
    closers: [
      async () => {
        calls.push('closer');
      },
    ],
  };
}

describe('shutdown() and the front ends', () => {
  test('with nothing in flight, every front end is drained, then closed, in order', async () => {
    const calls: string[] = [];
    const registry = await registryWithOneTunnel();
    const tunnel = registry.all()[0]!;
    const idle = { inFlight: 0, whenIdle: () => Promise.resolve() };
    await within(
      shutdown(running(calls, registry, idle, [0, 0]), 30_000, pino({ level: 'silent' })),
      30_000,
      'the drain',
    );
    assert.deepEqual(calls, [
      'http.startDrain',
      'tcp.startDrain',
      'tunnels.stopAccepting',
      'http.close',
      'tcp.close',
      'closer',
    ]);
    assert.ok(tunnel.session.closed, 'the tunnel was closed');
  });

  test('requests still in flight when the grace period ends: every front end closes, then cuts, its upgraded connections', async () => {
    const calls: string[] = [];
    const lines: Record<string, unknown>[] = [];
    const registry = await registryWithOneTunnel();
    // A request that never finishes.
    const busy = { inFlight: 1, whenIdle: () => new Promise<void>(() => {}) };
    const started = performance.now();
    await within(
      shutdown(running(calls, registry, busy, [2, 3]), 50, capturingLogger(lines)),
      30_000,
      'the drain',
    );
    assert.ok(performance.now() - started >= 50 + UPGRADE_CLOSE_MS - 5, 'waited the grace and the close');
    assert.deepEqual(calls, [
      'http.startDrain',
      'tcp.startDrain',
      'tunnels.stopAccepting',
      'http.closeUpgraded',
      'tcp.closeUpgraded',
      'http.destroyUpgraded',
      'tcp.destroyUpgraded',
      'http.close',
      'tcp.close',
      'closer',
    ]);
    const graceEnded = lines.find((line) => line.event === 'grace-ended');
    assert.equal(graceEnded?.upgrades, 5, 'the upgraded connections of both front ends are counted');
    assert.ok(
      registry.all().every((t) => t.session.closed),
      'the tunnel was cut',
    );
  });

  test('requests that finish within the grace period: no upgraded connection is cut', async () => {
    const calls: string[] = [];
    const registry = await registryWithOneTunnel();
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const requests = {
      inFlight: 1,
      whenIdle: () => {
        setImmediate(finish);
        return finished;
      },
    };
    await within(
      shutdown(running(calls, registry, requests, [1, 1]), 30_000, pino({ level: 'silent' })),
      30_000,
      'the drain',
    );
    assert.ok(!calls.some((call) => call.endsWith('Upgraded')), calls.join(', '));
    assert.deepEqual(calls.slice(-3), ['http.close', 'tcp.close', 'closer']);
  });
});
