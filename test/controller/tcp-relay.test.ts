// The TCP relay's edge paths (docs/tcp.md) through real tunnel sessions (controller and agent halves in
// one process, over loopback TCP) and real sockets on both ends: the first bytes held and retried on
// another tunnel, a first flight over the hold limit, resets from either end mid-transfer, half-closes
// each way, and the per-client and per-route limits at their 2nd and 10th use.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { deliverTcp } from '../../src/agent/deliver-tcp.js';
import { ClusterDispatcher } from '../../src/controller/dispatcher.js';
import { TcpRoutes, type TcpListener } from '../../src/controller/tcp-listener.js';
import { HOLD_LIMIT } from '../../src/controller/tcp-relay.js';
import type { Tunnel } from '../../src/controller/tunnels.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { parseTcpStreamMeta } from '../../src/proxy/meta.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { captureLog } from '../helpers/log-capture.js';
import { sessionPair, type SessionPair } from '../helpers/session-pair.js';
import { transportPair } from '../helpers/transport-pair.js';
import { EVENT_MS, waitFor, within } from '../helpers/wait.js';

const silentAgent = captureLog('silent').logger;

/** How one connection ended as a socket saw it: a FIN, then a clean close, or an error's code. */
interface Ending {
  readonly fin: boolean;
  readonly error: string | undefined;
}

/** Resolves how `socket` ends: whether a FIN came and which error, if any, closed it. */
function ending(socket: Socket): Promise<Ending> {
  let fin = false;
  let error: string | undefined;
  socket.on('end', () => (fin = true));
  socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
  return new Promise((resolve) => socket.once('close', () => resolve({ fin, error })));
}

/** Collects what `socket` receives. */
function collect(socket: Socket): { bytes: () => Buffer; length: () => number } {
  const chunks: Buffer[] = [];
  let length = 0;
  socket.on('data', (c: Buffer) => {
    chunks.push(c);
    length += c.length;
  });
  return { bytes: () => Buffer.concat(chunks), length: () => length };
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('TCP relay paths', () => {
  const logs = captureLog();
  let good: SessionPair;
  let refuser: SessionPair;
  /** How the refusing agent refuses: at once, or only after it read more than HOLD_LIMIT bytes. */
  let refuseLate = false;
  let refusals = 0;
  const servers: Server[] = [];
  /** Every socket a target accepted, with how it ended. */
  const targetEnds: Promise<Ending>[] = [];
  /** The open-connections gauge as the metrics keep it: opened minus finished, by route. */
  const gauge = new Map<string, number>();
  const done: string[] = [];
  let routes: TcpRoutes;
  let limited: TcpRoutes;
  const ports: Record<string, number> = {};

  async function target(name: string, onSocket: (s: Socket) => void): Promise<void> {
    const server = createServer({ allowHalfOpen: true }, (s) => {
      targetEnds.push(ending(s));
      onSocket(s);
    });
    servers.push(server);
    ports[name] = await listenOnLoopback(server);
  }

  function tunnelOf(pair: SessionPair, replica: string): Tunnel {
    return {
      session: pair.server,
      cluster: 'shop',
      agent: 'a',
      replica,
      since: Date.now(),
    } as unknown as Tunnel;
  }

  before(async () => {
    good = await sessionPair(transportPair('tcp'));
    good.client.on('stream', (stream: Stream) => {
      const parsed = parseTcpStreamMeta(stream.meta);
      if (!parsed.ok) return stream.reset(1, parsed.reason);
      const url = new URL(parsed.meta.target);
      deliverTcp(
        stream,
        parsed.meta,
        { host: url.hostname, port: Number(url.port), lookup: undefined, connectTimeoutMs: 5000 },
        silentAgent,
      );
    });
    refuser = await sessionPair(transportPair('tcp'));
    refuser.client.on('stream', (stream: Stream) => {
      refusals++;
      if (!refuseLate) return stream.reset(ErrorCode.REFUSED_STREAM, 'draining');
      let seen = 0;
      stream.on('error', () => {});
      stream.on('data', (c: Buffer) => {
        seen += c.length;
        if (seen > HOLD_LIMIT && !stream.destroyed) stream.reset(ErrorCode.REFUSED_STREAM, 'draining');
      });
    });
    const tunnels = { good: tunnelOf(good, 'good'), refuser: tunnelOf(refuser, 'refuser') };
    // Cluster `retry` tries the refusing agent first; `shop` has only the good one.
    const dispatcher = new ClusterDispatcher({
      pick: (cluster, exclude) => {
        const order = cluster === 'retry' ? [tunnels.refuser, tunnels.good] : [tunnels.good];
        return order.find((t) => !exclude.has(t));
      },
      unavailableReason: () => 'no tunnel',
    });
    const observer = {
      opened: (route: string) => gauge.set(route, (gauge.get(route) ?? 0) + 1),
      done: (d: { route: string; outcome: string }) => {
        done.push(d.outcome);
        if (d.outcome !== 'over_limit') gauge.set(d.route, (gauge.get(d.route) ?? 0) - 1);
      },
    };
    routes = new TcpRoutes({
      dispatcher,
      limits: { maxConnectionsPerClient: 100, maxConnectionsPerRoute: 100 },
      log: logs.logger,
      graceMs: 2000,
      observer,
    });
    limited = new TcpRoutes({
      dispatcher,
      limits: { maxConnectionsPerClient: 3, maxConnectionsPerRoute: 5 },
      log: logs.logger,
      graceMs: 2000,
      observer,
    });
    await target('echo', (s) => s.pipe(s));
    // Answers only after the client's FIN: the byte count it read.
    await target('count', (s) => {
      let n = 0;
      s.on('data', (c: Buffer) => (n += c.length));
      s.on('end', () => s.end(String(n)));
    });
    // Answers once it has read 256 KiB, before any FIN (a request larger than the hold limit).
    await target('quarter', (s) => {
      let n = 0;
      s.on('data', (c: Buffer) => {
        const before = n;
        n += c.length;
        if (before < 256 * 1024 && n >= 256 * 1024) s.write(`got ${n}`);
      });
      s.on('end', () => s.end());
    });
    // Echoes the first chunk, then resets the connection on the next.
    await target('reset-later', (s) => {
      let chunks = 0;
      s.on('data', (c: Buffer) => {
        if (++chunks === 1) s.write(c);
        else s.resetAndDestroy();
      });
    });
    // Speaks after the client's FIN: 512 KiB more, then its own FIN.
    await target('after-fin', (s) => {
      s.write('hello');
      s.resume();
      s.on('end', () => {
        s.write(pattern(512 * 1024, 7));
        setImmediate(() => s.end('bye'));
      });
    });
    // Queues 1 MiB and its FIN, then dies with an RST at once: what was not out yet is lost, FIN too.
    await target('die-sending', (s) => {
      s.on('error', () => {});
      s.end(pattern(1 << 20, 11));
      s.on('finish', () => s.resetAndDestroy());
    });
    // Sends 1 MiB and its FIN, then waits to be killed (the test resets it once the client has the FIN).
    await target('fin-then-die', (s) => {
      finThenDie.push(s);
      s.on('error', () => {});
      s.end(pattern(1 << 20, 12));
    });
    // Greets and half-closes at once, then reads until the client's FIN and counts what it read.
    await target('fin-first', (s) => {
      s.end('greeting');
      let n = 0;
      s.on('data', (c: Buffer) => (n += c.length));
      s.on('end', () => finFirstRead.push(n));
    });
  });
  const finFirstRead: number[] = [];
  const finThenDie: Socket[] = [];

  after(async () => {
    for (const r of [routes, limited]) {
      for (const l of r?.list() ?? []) await r.remove(l.address).catch(() => {});
    }
    for (const s of servers) s.close();
    await good?.close();
    await refuser?.close();
  });

  const add = (r: TcpRoutes, name: string, cluster = 'shop'): Promise<TcpListener> =>
    r.add({ listen: '127.0.0.1:0', cluster, target: `tcp://127.0.0.1:${ports[name]}` });

  /** The `tcp connection` lines logged for `listener`. */
  const linesOf = (l: TcpListener): Record<string, unknown>[] =>
    logs.lines.filter((x) => x.msg === 'tcp connection' && x.route === l.address);

  /** Waits until every relayed connection is finished: the open gauge at 0 and no stream left. */
  async function settled(l: TcpListener, lines: number): Promise<void> {
    await waitFor(`${lines} tcp connection lines`, () => linesOf(l).length >= lines);
    await waitFor('no open connection', () => l.openConnections === 0 && (gauge.get(l.address) ?? 0) === 0);
    await waitFor('no stream left', () => good.server.streamCount === 0 && good.client.streamCount === 0);
  }

  it('a first flight of exactly the hold limit, sent before the stream opens, is retried whole on the next tunnel', async () => {
    const l = await add(routes, 'echo', 'retry');
    for (const size of [HOLD_LIMIT - 1, HOLD_LIMIT]) {
      refuseLate = false;
      const before = refusals;
      const payload = pattern(size, size & 0xff);
      const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
      c.end(payload); // queued before the socket even connects: all of it is there before any stream
      const got = collect(c);
      const end = ending(c);
      assert.deepEqual(await within(end, EVENT_MS, 'the echo'), { fin: true, error: undefined });
      assert.equal(got.length(), size);
      assert.ok(got.bytes().equals(payload), `${size} bytes came back changed`);
      assert.equal(refusals, before + 1, 'the refusing tunnel was tried first');
    }
    await settled(l, 2);
    for (const line of linesOf(l)) {
      assert.equal(line.outcome, 'done');
      assert.equal(line.via, 'a/good');
    }
  });

  it('a first flight over the hold limit reaches a target that answers only after all of it (no stall)', async () => {
    const count = await add(routes, 'count');
    const payload = pattern(1 << 20, 3);
    const c = connect({ port: count.port, host: '127.0.0.1', allowHalfOpen: true });
    c.end(payload);
    const got = collect(c);
    assert.deepEqual(await within(ending(c), EVENT_MS, 'the count'), { fin: true, error: undefined });
    assert.equal(got.bytes().toString(), String(1 << 20));

    const quarter = await add(routes, 'quarter');
    const q = connect({ port: quarter.port, host: '127.0.0.1', allowHalfOpen: true });
    q.write(pattern(256 * 1024, 4));
    const [reply] = (await within(once(q, 'data'), EVENT_MS, 'the 256 KiB answer')) as [Buffer];
    assert.equal(reply.toString(), `got ${256 * 1024}`);
    q.end();
    assert.deepEqual(await within(ending(q), EVENT_MS, 'the close'), { fin: true, error: undefined });
    await settled(count, 1);
    await settled(quarter, 1);
    assert.equal(linesOf(count)[0]!.bytesIn, 1 << 20);
    assert.equal(linesOf(quarter)[0]!.outcome, 'done');
  });

  it('a refusal after the relay stopped holding resets the client: nothing is lost in silence', async () => {
    const l = await add(routes, 'echo', 'retry');
    refuseLate = true;
    try {
      const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
      c.end(pattern(1 << 20, 5));
      const got = collect(c);
      const end = await within(ending(c), EVENT_MS, 'the reset');
      assert.deepEqual(end, { fin: false, error: 'ECONNRESET' }, `after ${got.length()} bytes`);
      await waitFor('the line', () => linesOf(l).length === 1);
      assert.equal(linesOf(l)[0]!.outcome, 'refused');
      await waitFor('no open connection', () => l.openConnections === 0 && (gauge.get(l.address) ?? 0) === 0);
    } finally {
      refuseLate = false;
    }
  });

  it('a client that resets mid-transfer, the 1st to the 10th, has the target reset, a reset line and no leak', async () => {
    const l = await add(routes, 'echo');
    for (let i = 1; i <= 10; i++) {
      const c = connect({ port: l.port, host: '127.0.0.1' });
      c.on('error', () => {});
      const firstTarget = targetEnds.length;
      c.write(pattern(4096, i));
      await within(once(c, 'data'), EVENT_MS, `echo ${i}`);
      await waitFor('the target socket', () => targetEnds.length > firstTarget);
      const targetEnd = targetEnds[firstTarget]!;
      c.write(pattern(200_000, i)); // still in flight when the client resets
      c.resetAndDestroy();
      const seen = await within(targetEnd, EVENT_MS, `the target's end ${i}`);
      assert.equal(seen.fin, false, `target ${i} saw a FIN, not a reset`);
      assert.equal(seen.error, 'ECONNRESET', `target ${i}`);
    }
    await settled(l, 10);
    for (const line of linesOf(l)) assert.equal(line.outcome, 'reset');
  });

  it('a client that resets before the target answered has the target reset too', async () => {
    const l = await add(routes, 'count');
    const firstTarget = targetEnds.length;
    const c = connect({ port: l.port, host: '127.0.0.1' });
    c.on('error', () => {});
    c.write(pattern(1000, 1));
    await waitFor('the target socket', () => targetEnds.length > firstTarget);
    c.resetAndDestroy();
    const seen = await within(targetEnds[firstTarget]!, EVENT_MS, "the target's end");
    assert.deepEqual(seen, { fin: false, error: 'ECONNRESET' });
    await settled(l, 1);
    assert.equal(linesOf(l)[0]!.outcome, 'reset');
  });

  it('a target that resets after it answered makes the client see ECONNRESET, not a FIN', async () => {
    const l = await add(routes, 'reset-later');
    for (let i = 1; i <= 2; i++) {
      const c = connect({ port: l.port, host: '127.0.0.1' });
      const end = ending(c);
      c.write('first');
      await within(once(c, 'data'), EVENT_MS, 'the first answer');
      c.write('second');
      assert.deepEqual(await within(end, EVENT_MS, 'the reset'), { fin: false, error: 'ECONNRESET' });
    }
    await settled(l, 2);
    for (const line of linesOf(l)) assert.equal(line.outcome, 'reset');
  });

  it('a target that dies sending makes the client see a reset, never a FIN after a cut answer, 10 times', async () => {
    const l = await add(routes, 'die-sending');
    for (let i = 1; i <= 10; i++) {
      const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
      const got = collect(c);
      const end = ending(c);
      const first = new Promise<void>((resolve) => {
        c.once('end', resolve);
        c.once('close', resolve);
      });
      await within(first, EVENT_MS, `the end ${i}`);
      // All of it and its FIN (the target's kernel had sent it all), or a reset: never a FIN after less.
      if (c.readableEnded) {
        const whole = got.length() === 1 << 20 && got.bytes().equals(pattern(1 << 20, 11));
        assert.ok(whole, `connection ${i}: a FIN after ${got.length()} bytes`);
        c.end();
      }
      const seen = await within(end, EVENT_MS, `the close ${i}`);
      if (!seen.fin) assert.equal(seen.error, 'ECONNRESET', `connection ${i} after ${got.length()} bytes`);
    }
    await settled(l, 10);
  });

  it('a target that sends its FIN and then dies: the client gets all of it, the FIN, then the reset', async () => {
    const l = await add(routes, 'fin-then-die');
    for (let i = 1; i <= 2; i++) {
      const lines = linesOf(l).length;
      const dying = finThenDie.length;
      const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
      const got = collect(c);
      const end = ending(c);
      await within(once(c, 'end'), EVENT_MS, `the FIN ${i}`);
      assert.equal(got.length(), 1 << 20, `connection ${i}: bytes lost before the FIN`);
      assert.ok(got.bytes().equals(pattern(1 << 20, 12)), `connection ${i}: the bytes came back changed`);
      await waitFor('the target socket', () => finThenDie.length > dying);
      const target = finThenDie[dying]!;
      target.resetAndDestroy();
      await within(once(target, 'close'), EVENT_MS, 'the target gone');
      // Nothing reads a socket after its FIN: the client's next bytes find the target gone, the agent
      // resets the stream, and the controller resets the client, after the FIN it sent.
      c.write('anyone there?');
      await waitFor(`the line of ${i}`, () => linesOf(l).length > lines);
      assert.equal(linesOf(l).at(-1)!.outcome, 'reset');
      c.write('hello?');
      const seen = await within(end, EVENT_MS, `the reset ${i}`);
      assert.equal(seen.fin, true);
      assert.ok(seen.error === 'EPIPE' || seen.error === 'ECONNRESET', `connection ${i}: ${seen.error}`);
    }
    await settled(l, 2);
  });

  it('a client FIN leaves the other way open: the target sends 512 KiB more, then its FIN', async () => {
    const l = await add(routes, 'after-fin');
    const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
    const got = collect(c);
    const end = ending(c);
    await within(once(c, 'data'), EVENT_MS, 'the greeting');
    c.end();
    assert.deepEqual(await within(end, EVENT_MS, 'the rest'), { fin: true, error: undefined });
    const all = got.bytes();
    assert.equal(all.length, 5 + 512 * 1024 + 3);
    assert.equal(all.subarray(0, 5).toString(), 'hello');
    assert.ok(all.subarray(5, 5 + 512 * 1024).equals(pattern(512 * 1024, 7)));
    assert.equal(all.subarray(-3).toString(), 'bye');
    await settled(l, 1);
    assert.equal(linesOf(l)[0]!.outcome, 'done');
    assert.equal(linesOf(l)[0]!.bytesOut, all.length);
  });

  it('a target FIN leaves the other way open: the client sends 300 KiB more, then its FIN', async () => {
    const l = await add(routes, 'fin-first');
    const c = connect({ port: l.port, host: '127.0.0.1', allowHalfOpen: true });
    const got = collect(c);
    await within(once(c, 'end'), EVENT_MS, "the target's FIN");
    assert.equal(got.bytes().toString(), 'greeting');
    c.end(pattern(300 * 1024, 9));
    await within(once(c, 'close'), EVENT_MS, 'the close');
    await waitFor('the target read it all', () => finFirstRead.length === 1);
    assert.equal(finFirstRead[0], 300 * 1024);
    await settled(l, 1);
    assert.equal(linesOf(l)[0]!.outcome, 'done');
  });

  /** Opens a connection from `from` that has had its echo, or resolves how it was turned away. */
  async function dial(l: TcpListener, from: string): Promise<Socket | Ending> {
    const c = connect({ port: l.port, host: '127.0.0.1', localAddress: from, allowHalfOpen: true });
    const end = ending(c);
    c.write('hi');
    const first = await within(
      // Not once(c, 'data'): it rejects on the 'error' of a connection turned away with an RST.
      Promise.race([new Promise<'data'>((resolve) => c.once('data', () => resolve('data'))), end]),
      EVENT_MS,
      `a connection from ${from}`,
    );
    return first === 'data' ? c : first;
  }

  async function closeOne(l: TcpListener, c: Socket): Promise<void> {
    const was = l.openConnections;
    c.end();
    await within(once(c, 'close'), EVENT_MS, 'the close');
    await waitFor('the listener to count it gone', () => l.openConnections === was - 1);
  }

  it('the per-client limit turns the next one away, and admits one again after one closes, 10 times', async () => {
    const l = await add(limited, 'echo');
    const held: Socket[] = [];
    for (let i = 0; i < 3; i++) held.push((await dial(l, '127.0.0.1')) as Socket);
    for (let round = 1; round <= 10; round++) {
      const over = await dial(l, '127.0.0.1');
      assert.ok(!('write' in over), `round ${round}: a 4th was admitted`);
      // Turned away with an RST: a FIN would read as an orderly empty answer.
      assert.deepEqual(over, { fin: false, error: 'ECONNRESET' }, `round ${round}`);
      await closeOne(l, held.shift()!);
      const again = await dial(l, '127.0.0.1');
      assert.ok('write' in again, `round ${round}: none admitted after one closed`);
      held.push(again as Socket);
    }
    // Another address is not held to this one's limit.
    const other = await dial(l, '127.0.0.2');
    assert.ok('write' in other, 'another client address was turned away');
    held.push(other as Socket);
    const refused = logs.lines.filter(
      (x) => x.msg === 'tcp connection refused: over limit' && x.route === l.address,
    );
    assert.equal(refused.length, 10);
    assert.match(String(refused[0]!.client), /^127\.0\.0\.1:\d+$/);
    for (const c of held) c.destroy();
    await waitFor('no open connection', () => l.openConnections === 0 && (gauge.get(l.address) ?? 0) === 0);
    assert.equal(done.filter((d) => d === 'over_limit').length >= 10, true);
  });

  it('the per-route limit turns the next one away whatever its address, and admits one after one closes', async () => {
    const l = await add(limited, 'echo');
    const held: Socket[] = [];
    for (const from of ['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.2', '127.0.0.2']) {
      held.push((await dial(l, from)) as Socket);
    }
    for (let round = 1; round <= 10; round++) {
      const from = `127.0.0.${3 + round}`;
      const over = await dial(l, from);
      assert.ok(!('write' in over), `round ${round}: a 6th was admitted`);
      assert.deepEqual(over, { fin: false, error: 'ECONNRESET' }, `round ${round}`);
      await closeOne(l, held.shift()!);
      const again = await dial(l, from);
      assert.ok('write' in again, `round ${round}: none admitted after one closed`);
      held.push(again as Socket);
    }
    for (const c of held) c.destroy();
    await waitFor('no open connection', () => l.openConnections === 0 && (gauge.get(l.address) ?? 0) === 0);
  });
});
