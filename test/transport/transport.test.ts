// The transports over real sockets on port 0: the same byte-exact transfer for tcp, tls, ws and wss,
// then each failure a dialer or listener can meet, then the WebSocket adapter's own contract.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import { describe, type TestContext, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { SluiceError } from '../../src/errors.js';
import {
  dial,
  listen,
  type PeerInfo,
  parseTransportUrl,
  TransportError,
  type TransportScheme,
  type TunnelListener,
} from '../../src/transport/index.js';
import { makeTestCerts } from '../helpers/certs.js';
import { MiB } from '../helpers/data.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

const SCHEMES: readonly TransportScheme[] = ['tcp', 'tls', 'ws', 'wss'];
const CHUNK = 64 * 1024;
/** A test's own bound: generous, as the machine may be busy; a hang still fails long before the file's. */
const TEST_MS = scaled(120_000);

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function listenUrl(scheme: TransportScheme): string {
  return `${scheme}://127.0.0.1:0${scheme === 'ws' || scheme === 'wss' ? '/tunnel' : ''}`;
}

interface Accepting {
  listener: TunnelListener;
  /** Connections in the order the listener handed them out. */
  accepted: Duplex[];
  peers: PeerInfo[];
  next(): Promise<Duplex>;
}

async function startListener(t: TestContext, scheme: TransportScheme): Promise<Accepting> {
  const { cert, key } = await makeTestCerts();
  const accepted: Duplex[] = [];
  const peers: PeerInfo[] = [];
  const listener = await listen({ url: listenUrl(scheme), cert, key }, (transport, peer) => {
    accepted.push(transport);
    peers.push(peer);
  });
  // A failed assertion must not leave a server holding the test process open.
  t.after(() => listener.close());
  let taken = 0;
  const next = async () => {
    const index = taken++;
    await waitFor('an accepted connection', () => accepted.length > index, EVENT_MS);
    return accepted[index]!;
  };
  return { listener, accepted, peers, next };
}

/** A listener with one dialed connection: `client` is the dialer's end, `server` the listener's. */
async function connectedPair(t: TestContext, scheme: TransportScheme) {
  const { ca } = await makeTestCerts();
  const accepting = await startListener(t, scheme);
  const client = await dial({ url: accepting.listener.url, ca, timeoutMs: EVENT_MS });
  t.after(() => client.destroy());
  const server = await accepting.next();
  return { ...accepting, client, server };
}

/** Writes `data` in chunks, waiting for 'drain' whenever write() says so. */
async function send(w: Writable, data: Buffer, progress = { written: 0, waiting: false }): Promise<void> {
  for (let offset = 0; offset < data.length; offset += CHUNK) {
    const more = w.write(data.subarray(offset, offset + CHUNK));
    progress.written = Math.min(offset + CHUNK, data.length);
    if (!more) {
      progress.waiting = true;
      await once(w, 'drain');
      progress.waiting = false;
    }
  }
}

/** Reads exactly `expected` bytes without waiting for 'end'; resolves with their sha256. */
function receive(r: Readable, expected: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const cleanup = () => {
      r.off('data', onData);
      r.off('error', onError);
      r.off('end', onEnd);
    };
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes < expected) return;
      cleanup();
      if (bytes > expected) reject(new Error(`received ${bytes} bytes, expected ${expected}`));
      else resolve(hash.digest('hex'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`ended after ${bytes} of ${expected} bytes`));
    };
    r.on('data', onData);
    r.once('error', onError);
    r.once('end', onEnd);
  });
}

/** A raw TCP server that accepts connections and never says a word. */
async function silentServer(t: TestContext): Promise<{ server: Server; port: number; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => sockets.push(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => closeServer(server, sockets));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { server, port: address.port, sockets };
}

async function closeServer(server: Server, sockets: Socket[]): Promise<void> {
  for (const socket of sockets) socket.destroy();
  if (!server.listening) return;
  const closed = once(server, 'close');
  server.close();
  await within(closed, EVENT_MS, 'raw server close');
}

function isInvalidUrl(url: string) {
  return (err: unknown) => {
    assert.ok(err instanceof SluiceError);
    assert.equal(err.code, 'SLUICE_ERR_INVALID_URL');
    assert.ok(err.message.includes(url), err.message);
    assert.ok(err.message.includes('tcp://, tls://, ws://, wss://'), err.message);
    return true;
  };
}

function isTlsConfig(err: unknown) {
  assert.ok(err instanceof SluiceError);
  assert.equal(err.code, 'SLUICE_ERR_TLS_CONFIG');
  return true;
}

for (const scheme of SCHEMES) {
  describe(`${scheme} transport`, () => {
    test(
      'carries 8 MiB each way at once; end() reaches the listener; close() resolves',
      {
        timeout: TEST_MS,
      },
      async (t) => {
        const { listener, client, server } = await connectedPair(t, scheme);
        const serverEnded = once(server, 'end');
        const up = randomBytes(8 * MiB);
        const down = randomBytes(8 * MiB);
        const [upHash, downHash] = await Promise.all([
          receive(server, up.length),
          receive(client, down.length),
          send(client, up),
          send(server, down),
        ]);
        assert.equal(upHash, sha256(up));
        assert.equal(downHash, sha256(down));

        const clientClosed = once(client, 'close');
        client.end();
        await within(serverEnded, EVENT_MS, 'end on the listener side');
        await within(listener.close(), EVENT_MS, 'listener.close()');
        await within(clientClosed, EVENT_MS, 'close on the dialer side');
      },
    );

    test('tells the listener who connected and reports the bound port', { timeout: TEST_MS }, async (t) => {
      const { listener, client, accepted, peers } = await connectedPair(t, scheme);
      const { host, port } = listener.address();
      assert.equal(host, '127.0.0.1');
      assert.notEqual(port, 0);
      assert.equal(parseTransportUrl(listener.url).port, port);
      assert.equal(accepted.length, 1);
      assert.equal(peers[0]?.remoteAddress, '127.0.0.1');
      assert.ok((peers[0]?.remotePort ?? 0) > 0);
      client.destroy();
      await listener.close();
    });

    test('close() destroys open connections without an error', { timeout: TEST_MS }, async (t) => {
      const { listener, client, server } = await connectedPair(t, scheme);
      const serverErrors: Error[] = [];
      server.on('error', (err) => serverErrors.push(err));
      client.on('error', () => {}); // the dialer may see a reset: the connection was pulled from it
      client.resume();
      // Not events.once(): it rejects on 'error', and only 'close' matters here.
      const closed = Promise.all([server, client].map((end) => new Promise((ok) => end.once('close', ok))));
      await within(listener.close(), EVENT_MS, 'listener.close()');
      await within(closed, EVENT_MS, 'both ends to close');
      assert.deepEqual(serverErrors, []);
      assert.equal(await listener.close(), undefined, 'close() is idempotent');
    });
  });
}

for (const scheme of ['tls', 'wss'] as const) {
  describe(`${scheme} certificate checks`, () => {
    test('refuses a certificate that no trusted CA signed', { timeout: TEST_MS }, async (t) => {
      const { listener, accepted } = await startListener(t, scheme);
      await assert.rejects(dial({ url: listener.url, timeoutMs: EVENT_MS }), (err: unknown) => {
        assert.ok(err instanceof TransportError);
        assert.equal(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
        assert.ok(err.message.includes(listener.url), err.message);
        return true;
      });
      assert.equal(accepted.length, 0);
      await listener.close();
    });

    test(
      'refuses a servername the certificate does not carry, accepts one it does',
      {
        timeout: TEST_MS,
      },
      async (t) => {
        const { ca } = await makeTestCerts();
        const { listener, next } = await startListener(t, scheme);
        await assert.rejects(
          dial({ url: listener.url, ca, servername: 'elsewhere.example' }),
          (err: unknown) => {
            assert.ok(err instanceof TransportError);
            assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
            return true;
          },
        );
        const client = await dial({ url: listener.url, ca, servername: 'localhost' });
        await next();
        client.destroy();
        await listener.close();
      },
    );

    test(
      'listening without cert or key, or with a key that does not match, is a config error',
      {
        timeout: TEST_MS,
      },
      async () => {
        const { cert, key, ca } = await makeTestCerts();
        const url = listenUrl(scheme);
        await assert.rejects(
          listen({ url }, () => {}),
          isTlsConfig,
        );
        await assert.rejects(
          listen({ url, cert }, () => {}),
          isTlsConfig,
        );
        await assert.rejects(
          listen({ url, cert: ca, key }, () => {}),
          isTlsConfig,
        );
      },
    );

    test('a ca that holds no PEM certificate is a config error', { timeout: TEST_MS }, async () => {
      const { cert } = await makeTestCerts();
      await assert.rejects(dial({ url: `${scheme}://127.0.0.1:1`, ca: 'not a certificate' }), isTlsConfig);
      const mangled = cert.replace(/\n[A-Za-z0-9+/]{20}/, '\nAAAAAAAAAAAAAAAAAAAA');
      await assert.rejects(dial({ url: `${scheme}://127.0.0.1:1`, ca: mangled }), isTlsConfig);
    });
  });
}

describe('transport URLs', () => {
  test(
    'bad or unsupported URLs are SLUICE_ERR_INVALID_URL naming the URL',
    { timeout: TEST_MS },
    async () => {
      for (const url of [
        'http://x:1',
        'tcp://host',
        'tls://host',
        'foo',
        'tcp://host:1/path',
        'ws://h/?q=1',
      ]) {
        assert.throws(() => parseTransportUrl(url), isInvalidUrl(url));
        await assert.rejects(dial({ url }), isInvalidUrl(url));
        await assert.rejects(
          listen({ url }, () => {}),
          isInvalidUrl(url),
        );
      }
    },
  );

  test('credentials in a URL are refused without echoing them', { timeout: 5_000 }, () => {
    assert.throws(
      () => parseTransportUrl('wss://agent:hunter2@example.com/t'),
      (err: unknown) => err instanceof SluiceError && !err.message.includes('hunter2'),
    );
  });

  test('ws and wss default their ports; IPv6 hosts lose their brackets', { timeout: 5_000 }, () => {
    assert.deepEqual(parseTransportUrl('ws://example.com'), {
      scheme: 'ws',
      host: 'example.com',
      port: 80,
      path: '/',
    });
    assert.deepEqual(parseTransportUrl('wss://example.com/tunnel'), {
      scheme: 'wss',
      host: 'example.com',
      port: 443,
      path: '/tunnel',
    });
    assert.deepEqual(parseTransportUrl('tls://[::1]:7000'), {
      scheme: 'tls',
      host: '::1',
      port: 7000,
      path: '',
    });
    assert.deepEqual(parseTransportUrl('tcp://10.0.0.1:7000/'), {
      scheme: 'tcp',
      host: '10.0.0.1',
      port: 7000,
      path: '',
    });
  });
});

describe('dial failures', () => {
  test('a closed port is ECONNREFUSED, with the URL in the message', { timeout: TEST_MS }, async (t) => {
    const { server, port, sockets } = await silentServer(t);
    await closeServer(server, sockets);
    for (const scheme of SCHEMES) {
      const url = `${scheme}://127.0.0.1:${port}`;
      await assert.rejects(dial({ url }), (err: unknown) => {
        assert.ok(err instanceof TransportError);
        assert.equal(err.code, 'ECONNREFUSED');
        assert.ok(err.message.includes(url), err.message);
        return true;
      });
    }
  });

  test('a peer that never answers times out with ETIMEDOUT', { timeout: TEST_MS }, async (t) => {
    const { server, port, sockets } = await silentServer(t);
    for (const scheme of ['ws', 'wss', 'tls'] as const) {
      const started = Date.now();
      const url = `${scheme}://127.0.0.1:${port}${scheme === 'tls' ? '' : '/'}`;
      await assert.rejects(dial({ url, timeoutMs: 300 }), (err: unknown) => {
        assert.ok(err instanceof TransportError);
        assert.equal(err.code, 'ETIMEDOUT');
        return true;
      });
      assert.ok(Date.now() - started >= 250, `gave up after ${Date.now() - started} ms`);
    }
    await closeServer(server, sockets);
  });

  test(
    'the signal aborts a dial in progress, and an aborted signal stops it before it starts',
    {
      timeout: TEST_MS,
    },
    async (t) => {
      const { server, port, sockets } = await silentServer(t);
      const controller = new AbortController();
      const dialing = dial({ url: `ws://127.0.0.1:${port}/`, signal: controller.signal });
      await within(once(server, 'connection'), EVENT_MS, 'the connection');
      controller.abort();
      const isAbort = (err: unknown) => {
        assert.ok(err instanceof TransportError);
        assert.equal(err.name, 'AbortError');
        assert.equal(err.code, 'ABORT_ERR');
        return true;
      };
      await assert.rejects(dialing, isAbort);
      await assert.rejects(dial({ url: `tcp://127.0.0.1:${port}`, signal: controller.signal }), isAbort);
      await closeServer(server, sockets);
    },
  );

  test('a ws path the listener does not serve is refused with 404', { timeout: TEST_MS }, async (t) => {
    const { listener, accepted } = await startListener(t, 'ws');
    const url = listener.url.replace('/tunnel', '/elsewhere');
    await assert.rejects(dial({ url }), /404/);
    assert.equal(accepted.length, 0);
    await listener.close();
  });
});

/** A bare `ws` server, to see exactly which messages the adapter sends and to misbehave at it. */
async function rawWebSocketServer(t: TestContext) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  const address = wss.address();
  assert.ok(address !== null && typeof address === 'object');
  const connection = once(wss, 'connection') as Promise<[WebSocket]>;
  const close = () => {
    for (const ws of wss.clients) ws.terminate();
    return new Promise<void>((resolve) => wss.close(() => resolve()));
  };
  t.after(close);
  return { url: `ws://127.0.0.1:${address.port}/`, connection, close };
}

describe('WebSocketDuplex', () => {
  test('one corked batch of writes goes out as one binary message', { timeout: TEST_MS }, async (t) => {
    const raw = await rawWebSocketServer(t);
    const client = await dial({ url: raw.url });
    const [peer] = await within(raw.connection, EVENT_MS, 'the raw connection');
    const header = Buffer.from('0123456789ab');
    const payload = randomBytes(CHUNK);
    const first = once(peer, 'message');
    client.cork();
    client.write(header);
    client.write(payload);
    process.nextTick(() => client.uncork());
    const [message, isBinary] = (await within(first, EVENT_MS, 'a message')) as [Buffer, boolean];
    assert.equal(isBinary, true);
    assert.deepEqual(message, Buffer.concat([header, payload]));
    // Were the batch split, this 'message' would be its tail rather than the next write.
    const second = once(peer, 'message');
    client.write(Buffer.from('next'));
    const [next] = (await within(second, EVENT_MS, 'a second message')) as [Buffer];
    assert.equal(next.toString(), 'next');
    client.destroy();
    await raw.close();
  });

  test('a text message is a protocol error', { timeout: TEST_MS }, async (t) => {
    const { listener, next } = await startListener(t, 'ws');
    const raw = new WebSocket(listener.url);
    raw.on('error', () => {});
    await within(once(raw, 'open'), EVENT_MS, 'the raw client to open');
    const server = await next();
    const failed = once(server, 'error');
    raw.send('hello');
    const [err] = await within(failed, EVENT_MS, 'the error');
    assert.ok(err instanceof SluiceError);
    assert.equal(err.code, 'SLUICE_ERR_PROTOCOL');
    await within(once(raw, 'close'), EVENT_MS, 'the raw client to be dropped');
    await listener.close();
  });

  test(
    'a remote close ends the readable; a close with an error code is an error',
    {
      timeout: TEST_MS,
    },
    async (t) => {
      for (const hangUp of [(ws: WebSocket) => ws.close(1000), (ws: WebSocket) => ws.terminate()]) {
        const raw = await rawWebSocketServer(t);
        const client = await dial({ url: raw.url });
        const [peer] = await within(raw.connection, EVENT_MS, 'the raw connection');
        client.resume();
        const ended = once(client, 'end');
        hangUp(peer);
        await within(ended, EVENT_MS, `'end' after ${hangUp.toString()}`);
        await raw.close();
      }

      const raw = await rawWebSocketServer(t);
      const client = await dial({ url: raw.url });
      const [peer] = await within(raw.connection, EVENT_MS, 'the raw connection');
      const failed = once(client, 'error');
      peer.close(1011, 'upstream exploded');
      const [err] = await within(failed, EVENT_MS, 'the error');
      assert.ok(err instanceof SluiceError);
      assert.equal(err.code, 'SLUICE_ERR_TRANSPORT_CLOSED');
      assert.match(err.message, /1011.*upstream exploded/);
      await raw.close();
    },
  );

  test(
    'a paused reader stalls the writer with bounded buffers; resuming delivers every byte',
    {
      timeout: scaled(240_000),
    },
    async (t) => {
      const { listener, client, server } = await connectedPair(t, 'ws');
      const data = randomBytes(64 * MiB);
      const progress = { written: 0, waiting: false };
      // The server end is never read from until the stall has been seen.
      const writing = send(client, data, progress);

      await waitFor(
        'the listener side to stop reading',
        () => server.readableLength >= server.readableHighWaterMark,
        30_000,
      );
      const stalledAt = await waitForStall(progress, data.length);
      t.diagnostic(`writer stalled after ${(stalledAt / MiB).toFixed(1)} MiB`);
      assert.ok(stalledAt < data.length, 'the writer never had to wait');
      assert.equal(client.writableNeedDrain, true);
      assert.ok(
        client.writableLength <= client.writableHighWaterMark + CHUNK,
        `${client.writableLength} queued`,
      );
      assert.ok(
        server.readableLength <= server.readableHighWaterMark + MiB,
        `${server.readableLength} buffered`,
      );

      const received = receive(server, data.length);
      await within(writing, 60_000, 'the writer to finish after resume');
      assert.equal(await within(received, 60_000, 'every byte'), sha256(data));
      client.destroy();
      await listener.close();
    },
  );
});

/**
 * Resolves with the byte count once the writer has waited for 'drain' across `quietTurns` event-loop
 * turns without progress. No event says "nothing happened", so this counts turns (each one polls I/O)
 * rather than sleeping; a drain that was coming would arrive within a turn or two on loopback.
 */
async function waitForStall(
  progress: { written: number; waiting: boolean },
  total: number,
  quietTurns = 200,
): Promise<number> {
  let last = -1;
  let quiet = 0;
  await waitFor(
    'the writer to stall',
    () => {
      if (progress.written >= total && !progress.waiting)
        throw new Error('the writer finished without stalling');
      if (progress.waiting && progress.written === last) quiet++;
      else [quiet, last] = [0, progress.written];
      return quiet >= quietTurns;
    },
    30_000,
  );
  return last;
}
