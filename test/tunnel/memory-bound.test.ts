// Over real TCP, where payloads arrive as views into 64 KiB socket reads: a stalled stream fed tiny
// frames must hold memory near its window, not a socket buffer per frame. And a stream the server
// opens the moment the handshake completes must reach the client's onStream handler.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { readAll } from '../helpers/data.js';
import { waitFor, within } from '../helpers/wait.js';

setFlagsFromString('--expose-gc');
const gcOnce = runInNewContext('gc') as () => void;

/** Array buffers after a settled GC: backing stores are freed lazily, so collect a few times. */
async function settledArrayBuffers(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gcOnce();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().arrayBuffers;
}

const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

async function tcpSessions(options: object, onServer: (s: Session) => void, onStream?: (s: Stream) => void) {
  const server = net.createServer((sock) => {
    Session.accept(sock, { authenticate: () => ({ ok: true }), options }).then(onServer, () => {});
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(sock, 'connect');
  const hello = { token: 't', agent: 'a', replica: 'r' };
  return Session.connect(sock, { hello, options, ...(onStream ? { onStream } : {}) });
}

test('a stalled stream fed tiny frames holds about its window in memory', async () => {
  const window = 1024 * 1024;
  let stalled: Stream | undefined;
  let server: Session | undefined;
  const client = await tcpSessions({ window }, (s) => {
    server = s;
    s.on('stream', (st: Stream) => {
      if (st.meta.name === 'bulk') st.resume().on('end', () => st.end());
      else stalled = st.on('error', () => {}); // never read
    });
  });
  try {
    const small = client.open({ name: 'small' }).on('error', () => {});
    const bulk = client.open({ name: 'bulk' });
    const piece = Buffer.alloc(256, 1);
    const big = Buffer.alloc(64 * 1024, 2);
    // One tiny frame per bulk frame, so each tiny frame sits in its own socket read.
    for (let i = 0; i < 100_000 && small.sendCredit >= piece.length; i++) {
      small.write(piece);
      if (!bulk.write(big)) await once(bulk, 'drain');
    }
    await waitFor(
      'the stalled stream to receive its whole window',
      () => stalled !== undefined && stalled.held >= window - 256,
    );
    assert.ok(stalled!.held <= window, 'a stalled stream holds at most its window');
    // What the stalled stream pins is what destroying it frees.
    bulk.end();
    await waitFor('the bulk stream to retire', () => server!.streamCount === 1);
    const holding = await settledArrayBuffers();
    stalled!.destroy();
    await waitFor('the stalled stream to retire', () => server!.streamCount === 0);
    const pinned = holding - (await settledArrayBuffers());
    // Unbounded retention would pin ~64 KiB per 256-byte frame: about 256 MiB here.
    assert.ok(pinned < 3 * window, `the stalled stream pinned ${pinned} bytes for a ${window}-byte window`);
  } finally {
    client.destroy();
    server?.destroy();
  }
});

test('a stream opened as soon as accept() resolves reaches the client onStream handler', async () => {
  const sessions: Session[] = [];
  const received = new Promise<Stream>((resolve) => {
    tcpSessions(
      {},
      (server) => {
        sessions.push(server);
        server.open({ kind: 'first' }).end('hello from the controller');
      },
      resolve,
    ).then(
      (client) => sessions.push(client),
      () => {},
    );
  });
  try {
    const stream = await within(received, 5000, 'the stream');
    assert.equal(stream.meta.kind, 'first');
    const got = await within(readAll(stream), 5000, 'the stream to end');
    assert.equal(got.bytes, 'hello from the controller'.length);
  } finally {
    await waitFor('both sessions', () => sessions.length === 2);
    for (const s of sessions) s.destroy();
  }
});
