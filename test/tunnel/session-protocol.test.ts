// Protocol edges, against a raw peer: every violation ends the session with GO_AWAY carrying the right
// code, overload resets one stream only, and each timeout fires with its SLUICE_ERR_* code.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, SluiceError } from '../../src/errors.js';
import {
  decodeCodeReason,
  encodeFrame,
  encodeHeader,
  encodeJsonFrame,
  encodePing,
  encodeRst,
  encodeWindowUpdate,
} from '../../src/protocol/codec.js';
import { ErrorCode, Flag, FrameType } from '../../src/protocol/constants.js';
import { resolveSessionOptions } from '../../src/tunnel/options.js';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { sessionPair } from '../helpers/session-pair.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

const memory = async () => {
  const p = duplexPair();
  return { client: p.a, server: p.b, blackhole: p.blackhole, close: async () => void p.a.destroy() };
};

function ignoreErrors(s: Stream): Stream {
  return s.on('error', () => {});
}

/** A client session facing a raw server that has completed the handshake. */
async function clientVsRaw(options = {}) {
  const { a, b } = duplexPair();
  const raw = new RawPeer(b);
  const connecting = Session.connect(a, { hello: { token: 't', agent: 'a', replica: 'r' }, options });
  await raw.welcome();
  const session = await connecting;
  return { session, raw, closed: once(session, 'close') as Promise<[Error | undefined]> };
}

/** A server session facing a raw client that has completed the handshake. */
async function serverVsRaw(options = {}) {
  const { a, b } = duplexPair();
  const raw = new RawPeer(a);
  const accepting = Session.accept(b, { authenticate: () => ({ ok: true }), options });
  await raw.hello();
  const session = await accepting;
  return { session, raw, closed: once(session, 'close') as Promise<[Error | undefined]> };
}

async function expectGoAway(raw: RawPeer, closed: Promise<[Error | undefined]>, wire: number, code: string) {
  const goAway = await raw.next(FrameType.GO_AWAY);
  assert.equal(decodeCodeReason(goAway.payload).code, wire);
  const [err] = await within(closed, EVENT_MS, 'the session to close');
  assert.ok(err instanceof SluiceError);
  assert.equal(err.code, code);
  await raw.closedByPeer();
}

describe('protocol violations end the session with GO_AWAY', () => {
  test('DATA for a stream that was never opened', async () => {
    const { raw, closed } = await clientVsRaw();
    raw.send(encodeFrame(FrameType.DATA, 0, 2, Buffer.from('x')));
    await expectGoAway(raw, closed, ErrorCode.PROTOCOL_ERROR, 'SLUICE_ERR_PROTOCOL');
  });

  test('DATA beyond the granted credit', async () => {
    const { session, raw, closed } = await serverVsRaw({ window: 64 * 1024 });
    session.on('stream', ignoreErrors);
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(64 * 1024 + 1)));
    await expectGoAway(raw, closed, ErrorCode.FLOW_CONTROL_ERROR, 'SLUICE_ERR_FLOW_CONTROL');
  });

  test('credit above 2^31-1', async () => {
    const { session, raw, closed } = await clientVsRaw();
    session.open({}).on('error', () => {});
    raw.send(encodeWindowUpdate(1, 2 ** 31 - 1));
    await expectGoAway(raw, closed, ErrorCode.FLOW_CONTROL_ERROR, 'SLUICE_ERR_FLOW_CONTROL');
  });

  test('a SYN with the wrong parity, and one that reuses an id', async () => {
    for (const ids of [[2], [3, 1]]) {
      const { session, raw, closed } = await serverVsRaw();
      session.on('stream', ignoreErrors);
      for (const id of ids) raw.send(encodeJsonFrame(FrameType.SYN, id, {}));
      await expectGoAway(raw, closed, ErrorCode.PROTOCOL_ERROR, 'SLUICE_ERR_PROTOCOL');
    }
  });

  test('DATA after FIN', async () => {
    const { session, raw, closed } = await serverVsRaw();
    session.on('stream', (s: Stream) => ignoreErrors(s).resume());
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    raw.send(encodeFrame(FrameType.DATA, Flag.FIN, 1, Buffer.from('a')));
    raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.from('b')));
    await expectGoAway(raw, closed, ErrorCode.PROTOCOL_ERROR, 'SLUICE_ERR_PROTOCOL');
  });

  test('a SYN payload that is not a JSON object', async () => {
    const { session, raw, closed } = await serverVsRaw();
    session.on('stream', ignoreErrors);
    raw.send(encodeFrame(FrameType.SYN, 0, 1, Buffer.from('[1]')));
    await expectGoAway(raw, closed, ErrorCode.PROTOCOL_ERROR, 'SLUICE_ERR_PROTOCOL');
  });

  test('an oversized frame is a FRAME_SIZE_ERROR', async () => {
    const { raw, closed } = await clientVsRaw();
    raw.send(encodeHeader(FrameType.SYN, 0, 2, 70_000));
    await expectGoAway(raw, closed, ErrorCode.FRAME_SIZE_ERROR, 'SLUICE_ERR_FRAME_SIZE');
  });

  test('another protocol version is answered with VERSION_MISMATCH and a readable reason', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(a);
    const accepting = Session.accept(b, { authenticate: () => ({ ok: true }) });
    const hello = encodeJsonFrame(FrameType.HELLO, 0, {
      token: 't',
      agent: 'a',
      replica: 'r',
      window: 65536,
    });
    hello[0] = 2;
    raw.send(hello);
    const goAway = await raw.next(FrameType.GO_AWAY);
    const { code, reason } = decodeCodeReason(goAway.payload);
    assert.equal(code, ErrorCode.VERSION_MISMATCH);
    assert.match(reason, /v2.*v1.*upgrade/);
    await assert.rejects(
      accepting,
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_VERSION_MISMATCH',
    );
  });

  test('a client hearing GO_AWAY(VERSION_MISMATCH) of another version reports it', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(b);
    const connecting = Session.connect(a, { hello: { token: 't', agent: 'a', replica: 'r' } });
    await raw.next(FrameType.HELLO);
    const goAway = encodeFrame(FrameType.GO_AWAY, 0, 0, Buffer.from([0, 0, 0, ErrorCode.VERSION_MISMATCH]));
    goAway[0] = 9;
    raw.send(goAway);
    await assert.rejects(
      connecting,
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_VERSION_MISMATCH',
    );
  });

  test('frames other than HELLO before the handshake', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(a);
    const accepting = Session.accept(b, { authenticate: () => ({ ok: true }) });
    raw.send(encodePing(false, Buffer.alloc(8)));
    await assert.rejects(accepting, (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_PROTOCOL');
    assert.equal(
      decodeCodeReason((await raw.next(FrameType.GO_AWAY)).payload).code,
      ErrorCode.PROTOCOL_ERROR,
    );
  });
});

describe('timeouts', () => {
  test('a silent peer fails the handshake with HANDSHAKE_TIMEOUT', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(b);
    const started = Date.now();
    const connecting = Session.connect(a, {
      hello: { token: 't', agent: 'a', replica: 'r' },
      options: { handshakeTimeout: 200 },
    });
    await assert.rejects(
      within(connecting, EVENT_MS, 'the handshake to time out'),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_HANDSHAKE_TIMEOUT',
    );
    assert.ok(Date.now() - started >= 190);
    assert.equal(
      decodeCodeReason((await raw.next(FrameType.GO_AWAY)).payload).code,
      ErrorCode.HANDSHAKE_TIMEOUT,
    );
  });

  test('an open that is never ACKed times out and is reset with CANCEL', async () => {
    const { session, raw } = await clientVsRaw({ openTimeout: 200 });
    const s = session.open({ kind: 'x' });
    const [err] = await within(once(s, 'error'), EVENT_MS, 'the open to time out');
    assert.equal((err as SluiceError).code, 'SLUICE_ERR_OPEN_TIMEOUT');
    const rst = await raw.next(FrameType.RST);
    assert.equal(rst.streamId, 1);
    assert.equal(decodeCodeReason(rst.payload).code, ErrorCode.CANCEL);
    assert.equal(session.stats().pendingOpens, 0);
    assert.equal(session.streamCount, 0);
  });

  test('write timeout through a session pair whose peer stops reading', async () => {
    const p = await sessionPair(memory, { writeTimeout: 300, pingInterval: 100, pingTimeout: 60_000 });
    try {
      p.server.on('stream', () => {}); // never reads: credit runs out, but pings still flow...
      // ...so stall the transport itself: the server's side stops reading its socket.
      p.transports.server.pause();
      const s = p.client.open({});
      s.on('error', () => {});
      s.write(Buffer.alloc(4 * 1024 * 1024));
      const [err] = await within(once(p.client, 'close'), EVENT_MS, 'the write timeout');
      assert.equal((err as SluiceError).code, 'SLUICE_ERR_WRITE_TIMEOUT');
    } finally {
      await p.close();
    }
  });
});

describe('overload and limits', () => {
  test('the session buffer bound resets one stream with OVERLOAD and the session goes on', async () => {
    const window = 64 * 1024;
    const p = await sessionPair(memory, { window, sessionBuffer: 3 * window });
    try {
      const held: Stream[] = [];
      p.server.on('stream', (s: Stream) => {
        if (s.meta.kind === 'echo') s.pipe(s);
        else held.push(ignoreErrors(s)); // never read
      });
      const streams = Array.from({ length: 4 }, () => p.client.open({ kind: 'stall' }));
      const errors = streams.map((s) => new Promise<unknown>((resolve) => s.once('error', resolve)));
      for (const s of streams) s.write(Buffer.alloc(window));
      const first = await within(Promise.race(errors), EVENT_MS, 'one stream to be reset');
      assert.equal((first as SluiceError).code, 'SLUICE_ERR_OVERLOAD');
      assert.ok(p.server.stats().heldBytes <= 3 * window);
      assert.equal(p.client.closed, false);
      // While the stalled streams hold the whole bound, new bytes are refused too; once they are
      // released the same session carries traffic again.
      for (const s of held) s.destroy();
      await waitFor('the held credit to be released', () => p.server.stats().heldBytes === 0);
      const e = p.client.open({ kind: 'echo' });
      e.end('still alive');
      const [chunk] = await within(once(e, 'data'), EVENT_MS, 'echo');
      assert.equal(String(chunk), 'still alive');
    } finally {
      await p.close();
    }
  });

  test('local opens above maxStreams throw TOO_MANY_STREAMS', async () => {
    const p = await sessionPair(memory, { maxStreams: 2 });
    try {
      p.server.on('stream', ignoreErrors);
      const opened = [p.client.open({}), p.client.open({})];
      assert.throws(
        () => p.client.open({}),
        (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_TOO_MANY_STREAMS',
      );
      await Promise.all(opened.map((s) => within(once(s, 'accept'), EVENT_MS, 'accept')));
      for (const s of opened) s.on('error', () => {});
    } finally {
      await p.close();
    }
  });

  test('a peer above our maxStreams is refused per stream with OVERLOAD', async () => {
    const { session, raw } = await serverVsRaw({ maxStreams: 1 });
    session.on('stream', ignoreErrors);
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}), encodeJsonFrame(FrameType.SYN, 3, {}));
    const rst = await raw.next(FrameType.RST);
    assert.equal(rst.streamId, 3);
    assert.equal(decodeCodeReason(rst.payload).code, ErrorCode.OVERLOAD);
    assert.equal(session.closed, false);
  });

  test('pending opens are bounded', async () => {
    const { session } = await clientVsRaw({ maxPendingOpens: 2 });
    session.open({}).on('error', () => {});
    session.open({}).on('error', () => {});
    assert.throws(
      () => session.open({}),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_TOO_MANY_PENDING_OPENS',
    );
    session.destroy();
  });

  test('a SYN with no stream handler is refused with REFUSED_STREAM', async () => {
    const { raw } = await serverVsRaw();
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    const rst = await raw.next(FrameType.RST);
    assert.equal(decodeCodeReason(rst.payload).code, ErrorCode.REFUSED_STREAM);
  });

  test('frames for a stream that already closed are ignored', async () => {
    const { session, raw, closed } = await serverVsRaw();
    session.on('stream', (s: Stream) => s.reset(ErrorCode.CANCEL, 'no'));
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    await raw.next(FrameType.RST);
    raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.from('late')), encodeWindowUpdate(1, 10));
    raw.send(encodePing(false, Buffer.alloc(8, 7)));
    const pong = await raw.next(FrameType.PING);
    assert.equal(pong.flags, Flag.ACK);
    assert.deepEqual(pong.payload, Buffer.alloc(8, 7));
    assert.equal(session.closed, false);
    session.destroy();
    const [err] = await closed;
    assert.equal(err, undefined);
  });
});

describe('liveness and options', () => {
  test('ping() measures the round trip', async () => {
    const p = await sessionPair(memory);
    try {
      const rtt = await within(p.client.ping(), EVENT_MS, 'pong');
      assert.ok(rtt >= 0 && rtt < scaled(1000));
      assert.equal(p.client.stats().rttMs, rtt);
    } finally {
      await p.close();
    }
  });

  test('automatic pings keep an idle session alive past the ping timeout', async () => {
    const p = await sessionPair(memory, { pingInterval: 100, pingTimeout: 300 });
    try {
      // Idle time passing is what is tested here, so this is a sleep, not a wait for something.
      await sleep(1000);
      assert.equal(p.client.closed, false);
      assert.equal(p.server.closed, false);
      assert.ok(p.client.rttMs >= 0, 'automatic pings measured an RTT');
    } finally {
      await p.close();
    }
  });

  test('options are validated with the exact key, and unknown keys are rejected', () => {
    const cases: [object, RegExp][] = [
      [{ pingInterval: 10 }, /^tunnel\.pingInterval must be an integer between 100ms and 5m$/],
      [{ window: 1000 }, /^tunnel\.window must be an integer between 64 KiB and /],
      [
        { pingInterval: 20_000, pingTimeout: 10_000 },
        /^tunnel\.pingTimeout must be at least tunnel\.pingInterval$/,
      ],
      [{ windw: 1 }, /^tunnel\.windw is not a known option$/],
      [{ window: 'big' }, /^tunnel\.window must be a number$/],
    ];
    for (const [input, message] of cases) {
      assert.throws(
        () => resolveSessionOptions(input as never),
        (e) => e instanceof ConfigError && e.code === 'SLUICE_ERR_INVALID_OPTION' && message.test(e.message),
        JSON.stringify(input),
      );
    }
    const resolved = resolveSessionOptions({ window: 1024 * 1024 });
    assert.ok(Object.isFrozen(resolved));
    assert.equal(resolved.pingInterval, 15_000);
  });
});

describe('close() and destroy()', () => {
  test('streams still open when the grace period ends are reset with CANCEL', async () => {
    const p = await sessionPair(memory);
    try {
      p.server.on('stream', ignoreErrors); // holds the stream open, never ends it
      const s = p.client.open({});
      await within(once(s, 'accept'), EVENT_MS, 'accept');
      const failed = once(s, 'error');
      const started = Date.now();
      await within(p.server.close(200), EVENT_MS, 'the drain to give up');
      assert.ok(Date.now() - started >= 190, 'waited for the grace period');
      const [err] = await within(failed, EVENT_MS, 'the reset');
      assert.equal((err as SluiceError).code, 'SLUICE_ERR_STREAM_RESET');
      assert.equal((err as SluiceError).wireCode, ErrorCode.CANCEL);
      assert.match((err as Error).message, /grace period ended/);
    } finally {
      await p.close();
    }
  });

  test('close() on an idle session resolves without waiting for the grace period', async () => {
    const p = await sessionPair(memory);
    const started = Date.now();
    await within(p.client.close(60_000), EVENT_MS, 'close');
    assert.ok(Date.now() - started < scaled(1000));
    assert.equal(p.client.closed, true);
    await p.close();
  });

  test('destroy(err) ends every stream with that error; destroy() aborts them quietly', async () => {
    const p = await sessionPair(memory);
    p.server.on('stream', ignoreErrors);
    const a = p.client.open({});
    const failed = once(a, 'error');
    const boom = new Error('boom');
    p.client.destroy(boom);
    const [err] = await failed;
    assert.equal(err, boom);
    const q = await sessionPair(memory);
    q.server.on('stream', ignoreErrors);
    const b = q.client.open({});
    b.on('error', () => assert.fail('a local destroy() must not emit an error'));
    const closed = once(b, 'close');
    q.client.destroy();
    await closed;
    assert.equal(b.destroyed, true);
    assert.throws(
      () => q.client.open({}),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_SESSION_CLOSED',
    );
    await p.close();
    await q.close();
  });
});

describe('review regressions', () => {
  test('frames after a teardown in the same read are not handled', async () => {
    const { session, raw } = await serverVsRaw();
    let streams = 0;
    session.on('stream', (s: Stream) => {
      streams++;
      ignoreErrors(s);
      session.destroy();
    });
    raw.send(Buffer.concat([encodeJsonFrame(FrameType.SYN, 1, {}), encodeJsonFrame(FrameType.SYN, 3, {})]));
    await within(once(session, 'close'), EVENT_MS, 'close');
    assert.equal(streams, 1, 'no stream is emitted on a closed session');
    assert.equal(session.streamCount, 0);
  });

  test('a HELLO too large to send rejects at once and leaves nothing on the transport', async () => {
    const { a } = duplexPair();
    const before = a.eventNames().map((n) => [n, a.listenerCount(n)]);
    await assert.rejects(
      Session.connect(a, { hello: { token: 'x'.repeat(20_000), agent: 'a', replica: 'r' } }),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_FRAME_SIZE',
    );
    assert.deepEqual(
      a.eventNames().map((n) => [n, a.listenerCount(n)]),
      before,
    );
  });

  test('ping() rejects when the session ends first', async () => {
    const { session } = await clientVsRaw(); // the raw peer never answers pings
    const pinging = session.ping();
    session.destroy();
    await assert.rejects(
      within(pinging, EVENT_MS, 'the ping'),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_SESSION_CLOSED',
    );
  });

  test('write and end callbacks are called when a stream is reset mid-write', async () => {
    const { session } = await clientVsRaw();
    const s = session.open({}).on('error', () => {});
    await new Promise<void>((resolve) => setImmediate(resolve));
    const results: string[] = [];
    const note = (what: string) => (err?: Error | null) => results.push(`${what}:${err ? 'error' : 'ok'}`);
    s.write(Buffer.alloc(8 * 1024 * 1024), note('inflight')); // beyond the 4 MiB credit: stays in flight
    s.write(Buffer.alloc(10), note('buffered'));
    s.end(note('end'));
    s.reset(ErrorCode.CANCEL, 'test');
    await waitFor('every callback', () => results.length === 3);
    assert.deepEqual(results.sort(), ['buffered:error', 'end:error', 'inflight:error']);
  });

  test('a peer that sends but never reads cannot grow our unsent output without bound', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(a);
    const accepting = Session.accept(b, { authenticate: () => ({ ok: true }) });
    await raw.hello();
    const session = await accepting;
    a.pause(); // the peer stops reading what we send
    a.removeAllListeners('data');
    let id = 1;
    let blocked = false;
    for (let round = 0; round < 64 && !blocked; round++) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 20_000; i++, id += 2) batch.push(encodeJsonFrame(FrameType.SYN, id, {}));
      if (!a.write(Buffer.concat(batch))) {
        const drained = await Promise.race([once(a, 'drain').then(() => true), sleep(500).then(() => false)]);
        blocked = !drained;
      }
    }
    assert.ok(blocked, 'the peer is pushed back');
    assert.ok(b.writableLength < 8 * 1024 * 1024, `unsent output grew to ${b.writableLength}`);
    assert.equal(session.closed, false);
    session.destroy();
    a.destroy();
  });

  test('a SYN that crosses an idle peer drain fails as REFUSED, safe to retry', async () => {
    const p = await sessionPair(memory);
    try {
      p.server.on('stream', ignoreErrors);
      const closing = p.server.close(10_000); // idle: tears down as soon as the GO_AWAY is out
      const racing = p.client.open({});
      const [err] = await within(once(racing, 'error'), EVENT_MS, 'the racing open to fail');
      assert.equal((err as SluiceError).code, 'SLUICE_ERR_STREAM_REFUSED');
      await closing;
    } finally {
      await p.close();
    }
  });

  test('a client that gives up on the handshake is reported as HANDSHAKE_TIMEOUT, not a violation', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(a);
    const accepting = Session.accept(b, { authenticate: () => new Promise(() => {}) });
    raw.send(encodeJsonFrame(FrameType.HELLO, 0, { token: 't', agent: 'a', replica: 'r', window: 65536 }));
    raw.send(encodeFrame(FrameType.GO_AWAY, 0, 0, Buffer.from([0, 0, 0, ErrorCode.HANDSHAKE_TIMEOUT])));
    await assert.rejects(
      within(accepting, EVENT_MS, 'accept'),
      (e) => e instanceof SluiceError && e.code === 'SLUICE_ERR_HANDSHAKE_TIMEOUT',
    );
  });
});

describe('the session bound covers retired streams', () => {
  test('streams retired with both FINs keep their unread bytes inside the bound until read', async () => {
    const window = 64 * 1024;
    const p = await sessionPair(memory, { window, sessionBuffer: 3 * window });
    try {
      p.server.on('stream', (s: Stream) => {
        ignoreErrors(s).resume();
        s.end(Buffer.alloc(window)); // a full window, then FIN
      });
      const streams: Stream[] = [];
      const codes: string[] = [];
      for (let i = 0; i < 6; i++) {
        const s = p.client.open({});
        s.on('error', (e: SluiceError) => codes.push(e.code));
        s.end(); // the response is never read: a slow public client
        streams.push(s);
        await waitFor('the stream to retire or be reset', () => p.client.streamCount === 0);
      }
      assert.ok(p.client.stats().heldBytes <= 3 * window, `held ${p.client.stats().heldBytes}`);
      assert.ok(codes.includes('SLUICE_ERR_OVERLOAD'), 'past the bound, responses are refused per stream');
      for (const s of streams) s.resume();
      await waitFor('reading to release the bound', () => p.client.stats().heldBytes === 0);
    } finally {
      await p.close();
    }
  });
});

test('small writes that pile up leave in one DATA frame', async () => {
  const p = await sessionPair(memory);
  try {
    p.server.on('stream', (s: Stream) => ignoreErrors(s).resume());
    const s = p.client.open({});
    await within(once(s, 'accept'), EVENT_MS, 'accept');
    const before = p.client.bytesOut;
    s.cork();
    for (let i = 0; i < 1000; i++) s.write(Buffer.alloc(10, i));
    s.uncork();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(p.client.bytesOut - before, 10_000 + 12, 'one header for 1000 small writes');
  } finally {
    await p.close();
  }
});

describe('ACK rides with the first frame of the stream it accepts', () => {
  /** The types of the frames of stream `id` the raw peer has seen, in order. */
  const framesOf = (raw: RawPeer, id: number): number[] =>
    raw.frames.filter((f) => f.streamId === id).map((f) => f.type);

  test('the ACK waits for the answer and comes right before its first DATA', async () => {
    const { session, raw } = await serverVsRaw();
    let answer: (() => void) | undefined;
    session.on('stream', (s: Stream) => (answer = () => s.end('answer')));
    // One read holds both frames, so the pong is written in the turn that took the stream.
    raw.send(Buffer.concat([encodeJsonFrame(FrameType.SYN, 1, {}), encodePing(false, Buffer.alloc(8, 1))]));
    await raw.next(FrameType.PING);
    assert.deepEqual(framesOf(raw, 1), [], 'no ACK went out on its own before the answer');
    answer!();
    await waitFor('the answer and its FIN', () => framesOf(raw, 1).length >= 3);
    assert.deepEqual(framesOf(raw, 1), [FrameType.ACK, FrameType.DATA, FrameType.DATA]);
    session.destroy();
  });

  test('a stream that sends nothing is still ACKed, alone, after a short delay', async () => {
    const { session, raw } = await serverVsRaw();
    session.on('stream', ignoreErrors);
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    const ack = await raw.next(FrameType.ACK, 2000);
    assert.equal(ack.streamId, 1);
    assert.deepEqual(framesOf(raw, 1), [FrameType.ACK]);
    session.destroy();
  });

  test('a stream granting credit before it answers is ACKed before the WINDOW_UPDATE', async () => {
    const { session, raw } = await serverVsRaw({ window: 64 * 1024 });
    session.on('stream', (s: Stream) => s.resume());
    raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
    raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.alloc(60 * 1024)));
    await raw.next(FrameType.WINDOW_UPDATE);
    assert.deepEqual(framesOf(raw, 1).slice(0, 2), [FrameType.ACK, FrameType.WINDOW_UPDATE]);
    session.destroy();
  });

  test('streams taken before a drain are ACKed ahead of the GO_AWAY', async () => {
    const { session, raw } = await serverVsRaw();
    session.on('stream', ignoreErrors);
    raw.send(Buffer.concat([encodeJsonFrame(FrameType.SYN, 1, {}), encodeJsonFrame(FrameType.SYN, 3, {})]));
    await waitFor('both streams taken', () => session.streamCount === 2);
    void session.close(60_000);
    await raw.next(FrameType.GO_AWAY);
    const types = raw.frames.map((f) => f.type);
    assert.deepEqual(types.slice(types.indexOf(FrameType.ACK)), [
      FrameType.ACK,
      FrameType.ACK,
      FrameType.GO_AWAY,
    ]);
    session.destroy();
  });

  test('a stream the peer resets before its ACK gets none afterwards', async () => {
    const { session, raw } = await serverVsRaw();
    session.on('stream', ignoreErrors);
    raw.send(Buffer.concat([encodeJsonFrame(FrameType.SYN, 1, {}), encodeRst(1, ErrorCode.CANCEL, 'gone')]));
    // Stream 3's ACK comes from the same delayed flush that would have carried stream 1's.
    raw.send(encodeJsonFrame(FrameType.SYN, 3, {}));
    const ack = await raw.next(FrameType.ACK, 2000);
    assert.equal(ack.streamId, 3);
    assert.deepEqual(framesOf(raw, 1), []);
    session.destroy();
  });
});
