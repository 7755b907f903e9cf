// The session suite, run over every transport (in-memory pair, TCP, TLS and WebSocket) and in both
// roles: the dialer as the session client, and the listener as the session client.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SluiceError } from '../../src/errors.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { GiB, MiB, readAll, writePattern } from '../helpers/data.js';
import { type MakeTransportPair, reverseRoles, sessionPair } from '../helpers/session-pair.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

function echo(stream: Stream): void {
  stream.pipe(stream);
}

async function echoRoundTrip(client: Session, bytes: number): Promise<void> {
  const s = client.open({ kind: 'echo' });
  const [sent, got] = await Promise.all([writePattern(s, bytes, 16 * 1024), readAll(s)]);
  assert.equal(got.bytes, bytes);
  assert.equal(got.sha256, sent);
}

function codeOf(err: unknown): string | undefined {
  return err instanceof SluiceError ? err.code : undefined;
}

export function runSessionSuite(name: string, make: MakeTransportPair): void {
  suite(`session over ${name}`, make);
  suite(`session over ${name}, roles reversed (the listener is the session client)`, reverseRoles(make));
}

function suite(title: string, make: MakeTransportPair): void {
  describe(title, { timeout: 120_000 }, () => {
    test('1 GiB through one stream, sha256 verified', async () => {
      const p = await sessionPair(make);
      try {
        const received = new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
          p.server.once('stream', (s: Stream) => readAll(s).then(resolve, reject));
        });
        const s = p.client.open({ kind: 'sink' });
        const sent = await writePattern(s, GiB);
        const got = await received;
        assert.equal(got.bytes, GiB);
        assert.equal(got.sha256, sent);
      } finally {
        await p.close();
      }
    });

    test('64 concurrent streams both ways, each verified', async () => {
      const p = await sessionPair(make);
      try {
        p.server.on('stream', echo);
        await Promise.all(Array.from({ length: 64 }, () => echoRoundTrip(p.client, 2 * MiB)));
        await waitFor(
          'streams to leave the tables',
          () => p.client.streamCount === 0 && p.server.streamCount === 0,
        );
      } finally {
        await p.close();
      }
    });

    test('half-close: the client ends first and still reads the answer', async () => {
      const p = await sessionPair(make);
      try {
        p.server.on('stream', async (s: Stream) => {
          const got = await readAll(s); // ends when the client's FIN arrives
          s.end(`got ${got.bytes}`);
        });
        const s = p.client.open({});
        s.end(Buffer.alloc(1000, 1));
        const answer = await readAll(s);
        assert.equal(answer.bytes, 'got 1000'.length);
        await waitFor(
          'both FINs to retire the stream',
          () => p.client.streamCount === 0 && p.server.streamCount === 0,
        );
      } finally {
        await p.close();
      }
    });

    test('half-close: the server ends first and still reads the rest', async () => {
      const p = await sessionPair(make);
      try {
        const serverGot = new Promise<number>((resolve) => {
          p.server.once('stream', async (s: Stream) => {
            s.end('bye');
            resolve((await readAll(s)).bytes);
          });
        });
        const s = p.client.open({});
        s.write('x');
        const first = await readAll(s); // the server's FIN ends our readable side
        assert.equal(first.bytes, 3);
        assert.ok(s.writable, 'our write side stays open after the peer FIN');
        const sent = await writePattern(s, 3 * MiB);
        assert.ok(sent);
        assert.equal(await serverGot, 1 + 3 * MiB);
      } finally {
        await p.close();
      }
    });

    test('reset mid-transfer ends only that stream, with its code', async () => {
      const p = await sessionPair(make);
      try {
        p.server.on('stream', (s: Stream) => {
          if (s.meta.kind === 'echo') return echo(s);
          let seen = 0;
          s.on('data', (c: Buffer) => {
            seen += c.length;
            if (seen >= MiB) s.reset(ErrorCode.CANCEL, 'enough');
          });
        });
        const s = p.client.open({ kind: 'victim' });
        const failed = once(s, 'error');
        writePattern(s, 64 * MiB).catch(() => {});
        const [err] = await failed;
        assert.equal(codeOf(err), 'SLUICE_ERR_STREAM_RESET');
        assert.equal((err as SluiceError).wireCode, ErrorCode.CANCEL);
        assert.match((err as Error).message, /enough/);
        await echoRoundTrip(p.client, 256 * 1024); // the session goes on
        assert.equal(p.client.closed, false);
      } finally {
        await p.close();
      }
    });

    test('a reader that stops exhausts the window; the writer stalls, then resumes', async () => {
      const window = 64 * 1024;
      const p = await sessionPair(make, { window });
      try {
        let serverStream: Stream | undefined;
        p.server.once('stream', (s: Stream) => {
          serverStream = s; // not read yet: the stream stays paused
        });
        const s = p.client.open({});
        const sending = writePattern(s, 2 * MiB);
        await waitFor(
          'the client to run out of credit',
          () => s.sendCredit === 0 && p.server.stats().heldBytes === window,
        );
        assert.equal(p.server.stats().heldBytes, window, 'the receiver holds exactly one window');
        assert.ok(s.writableLength <= s.writableHighWaterMark + 64 * 1024, 'the writer is pushed back');
        const got = await readAll(serverStream!);
        assert.equal(got.sha256, await sending);
        assert.equal(got.bytes, 2 * MiB);
      } finally {
        await p.close();
      }
    });

    test('a slow reader keeps memory bounded and does not slow a stream beside it', async () => {
      const window = 256 * 1024;
      const p = await sessionPair(make, { window });
      try {
        const slow: Stream[] = [];
        p.server.on('stream', (s: Stream) => {
          if (s.meta.kind === 'slow') slow.push(s);
          else s.resume().on('end', () => s.end());
        });
        const stalled = p.client.open({ kind: 'slow' });
        writePattern(stalled, 256 * MiB).catch(() => {});
        await waitFor('the slow stream to fill its window', () => stalled.sendCredit === 0);
        const fast = p.client.open({ kind: 'fast' });
        const done = once(fast, 'finish');
        await writePattern(fast, 64 * MiB);
        await done;
        await waitFor('the fast stream to retire', () => p.server.streamCount === 1);
        assert.ok(p.server.stats().heldBytes <= window, `held ${p.server.stats().heldBytes} > one window`);
        assert.ok(stalled.writableLength <= stalled.writableHighWaterMark + 64 * 1024);
        slow[0]!.destroy();
      } finally {
        await p.close();
      }
    });

    test('10,000 streams opened and closed leave no entries behind', async () => {
      const p = await sessionPair(make);
      try {
        p.server.on('stream', echo);
        let next = 0;
        const worker = async () => {
          while (next < 10_000) {
            next++;
            const s = p.client.open({ kind: 'echo' });
            s.end('ping');
            const got = await readAll(s);
            assert.equal(got.bytes, 4);
          }
        };
        await Promise.all(Array.from({ length: 100 }, worker));
        await waitFor(
          'all streams to retire',
          () => p.client.streamCount === 0 && p.server.streamCount === 0,
        );
        assert.deepEqual(
          {
            c: p.client.stats().pendingOpens,
            s: p.server.stats().pendingOpens,
            h: p.server.stats().heldBytes,
          },
          { c: 0, s: 0, h: 0 },
        );
      } finally {
        await p.close();
      }
    });

    test('a transport that silently stops delivering is caught by the ping timeout', async (t) => {
      const probe = await make();
      const canBlackhole = probe.blackhole !== undefined;
      await probe.close();
      if (!canBlackhole) return t.skip('transport cannot blackhole');
      const p = await sessionPair(make, { pingInterval: 100, pingTimeout: 300, writeTimeout: 10_000 });
      try {
        const started = Date.now();
        const closes = [once(p.client, 'close'), once(p.server, 'close')];
        p.transports.blackhole!();
        const [[clientErr], [serverErr]] = (await within(
          Promise.all(closes),
          EVENT_MS,
          'both sides to close',
        )) as [[unknown], [unknown]];
        const elapsed = Date.now() - started;
        assert.equal(codeOf(clientErr), 'SLUICE_ERR_PING_TIMEOUT');
        assert.equal(codeOf(serverErr), 'SLUICE_ERR_PING_TIMEOUT');
        assert.ok(elapsed >= 250 && elapsed < scaled(1500), `detected after ${elapsed}ms`);
      } finally {
        await p.close();
      }
    });

    test('GO_AWAY: streams in flight finish, new opens are refused', async () => {
      const p = await sessionPair(make);
      try {
        p.server.on('stream', echo);
        const inflight = p.client.open({ kind: 'echo' });
        const reply = readAll(inflight);
        inflight.write('before ');
        await once(inflight, 'accept');
        const goaway = once(p.client, 'goaway');
        const closing = p.server.close(10_000);
        const racing = p.client.open({ kind: 'echo' }); // its SYN crosses the GO_AWAY
        const [raceErr] = await within(once(racing, 'error'), EVENT_MS, 'the racing open to be refused');
        assert.equal(codeOf(raceErr), 'SLUICE_ERR_STREAM_REFUSED');
        await goaway;
        assert.throws(
          () => p.client.open({}),
          (e) => codeOf(e) === 'SLUICE_ERR_GOING_AWAY',
        );
        const clientClosed = once(p.client, 'close');
        inflight.end('after');
        assert.equal((await reply).bytes, 'before after'.length);
        await closing;
        const [clientErr] = await within(clientClosed, EVENT_MS, 'the client session to close');
        assert.equal(clientErr, undefined, 'a drained session closes cleanly');
      } finally {
        await p.close();
      }
    });

    test('a bad token is refused with its error code; a revoked one with FORBIDDEN', async () => {
      for (const code of ['UNAUTHORIZED', 'FORBIDDEN'] as const) {
        const transports = await make();
        try {
          const serverP = Session.accept(transports.server, {
            authenticate: () => ({ ok: false, code, reason: `token says ${code}` }),
          });
          serverP.catch(() => {});
          const err = await Session.connect(transports.client, {
            hello: { token: 'wrong', agent: 'a', replica: 'r' },
          }).then(
            () => assert.fail('connect should be refused'),
            (e: unknown) => e,
          );
          assert.equal(codeOf(err), `SLUICE_ERR_${code}`);
          assert.equal((err as SluiceError).wireCode, ErrorCode[code]);
          assert.match((err as Error).message, new RegExp(`token says ${code}`));
          await assert.rejects(serverP, (e) => codeOf(e) === `SLUICE_ERR_${code}`);
        } finally {
          await transports.close();
        }
      }
    });
  });
}
