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
import { Writable } from 'node:stream';
import { encodeFrame, encodeJsonFrame, encodeRst } from '../../src/protocol/codec.js';
import { ErrorCode, FrameType } from '../../src/protocol/constants.js';
import { readAll } from '../helpers/data.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { EVENT_MS, waitFor, within } from '../helpers/wait.js';

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
    const stream = await within(received, EVENT_MS, 'the stream');
    assert.equal(stream.meta.kind, 'first');
    const got = await within(readAll(stream), EVENT_MS, 'the stream to end');
    assert.equal(got.bytes, 'hello from the controller'.length);
  } finally {
    await waitFor('both sessions', () => sessions.length === 2);
    for (const s of sessions) s.destroy();
  }
});

test('a reader that read once and then stalled does not pin a transport read per tiny frame', async () => {
  const window = 64 * 1024;
  const { a, b } = duplexPair();
  const raw = new RawPeer(a);
  const accepting = Session.accept(b, {
    authenticate: () => ({ ok: true }),
    options: { window, sessionBuffer: window },
  });
  await raw.hello();
  const server = await accepting;
  let stalled: Stream | undefined;
  server.on('stream', (st: Stream) => {
    st.on('error', () => {});
    if (st.id === 1) stalled = st;
  });
  // Stream 3 is closed at once, so DATA for it needs no credit and pads each read to 64 KiB.
  raw.send(
    encodeJsonFrame(FrameType.SYN, 1, {}),
    encodeJsonFrame(FrameType.SYN, 3, {}),
    encodeRst(3, ErrorCode.CANCEL, ''),
  );
  await waitFor('stream 1', () => stalled !== undefined);
  stalled!.pipe(new Writable({ highWaterMark: 1, write() {} })); // takes one chunk, then never completes
  raw.send(encodeFrame(FrameType.DATA, 0, 1, Buffer.from('x')));
  const pieces = 2000;
  const before = await settledArrayBuffers();
  for (let i = 0; i < pieces; i++) {
    raw.send(
      Buffer.concat([
        encodeFrame(FrameType.DATA, 0, 1, Buffer.from('y')),
        encodeFrame(FrameType.DATA, 0, 3, Buffer.alloc(64 * 1024)),
      ]),
    );
  }
  await waitFor(
    'every piece to arrive',
    () => stalled!.readableLength + stalled!.writableLength >= pieces - 1 && a.writableLength === 0,
  );
  const pinned = (await settledArrayBuffers()) - before;
  // Without packing, each 1-byte piece kept its 64 KiB read alive: over 100 MiB here.
  assert.ok(pinned < 2 * 1024 * 1024, `pinned ${pinned} bytes for ${pieces} unread bytes`);
  server.destroy();
  a.destroy();
});

test('a stalled stream fed one-byte frames holds a few slabs, not an object per byte', async () => {
  const window = 64 * 1024;
  const { a, b } = duplexPair();
  const raw = new RawPeer(a);
  const accepting = Session.accept(b, { authenticate: () => ({ ok: true }), options: { window } });
  await raw.hello();
  const server = await accepting;
  let stalled: Stream | undefined;
  server.on('stream', (st: Stream) => {
    stalled = st.on('error', () => {}); // never read
  });
  raw.send(encodeJsonFrame(FrameType.SYN, 1, {}));
  await waitFor('stream 1', () => stalled !== undefined);
  const frames: Buffer[] = [];
  for (let i = 0; i < window; i++) frames.push(encodeFrame(FrameType.DATA, 0, 1, Buffer.of(i & 0xff)));
  const wire = Buffer.concat(frames);
  gcOnce();
  const before = process.memoryUsage().heapUsed;
  raw.send(wire);
  await waitFor('the whole window to arrive', () => stalled!.held === window);
  gcOnce();
  const grown = process.memoryUsage().heapUsed - before;
  // One Buffer object per byte would be ~100 bytes of heap each: over 6 MiB here.
  assert.ok(grown < 1024 * 1024, `heap grew ${grown} bytes for a ${window}-byte window of 1-byte frames`);
  // Merged entries still deliver every byte, in order.
  const received: Buffer[] = [];
  let count = 0;
  stalled!.on('data', (c: Buffer) => {
    received.push(c);
    count += c.length;
  });
  await waitFor('the queue to drain', () => count === window);
  const all = Buffer.concat(received);
  for (let i = 0; i < window; i++) assert.equal(all[i], i & 0xff, `byte ${i}`);
  server.destroy();
  a.destroy();
});

test('idle streams whose first byte came with their SYN keep no copy of it once it is read', async () => {
  const { a, b } = duplexPair();
  const raw = new RawPeer(a);
  const accepting = Session.accept(b, { authenticate: () => ({ ok: true }), options: {} });
  await raw.hello();
  const server = await accepting;
  const streams = 1000;
  let delivered = 0;
  server.on('stream', (st: Stream) => {
    st.on('error', () => {});
    // Piped at once, as the agent pipes a stream into its target: flowing, but not read yet.
    st.pipe(
      new Writable({
        write(chunk: Buffer, _encoding, cb) {
          delivered += chunk.length;
          cb();
        },
      }),
    );
  });
  const frames: Buffer[] = [];
  for (let i = 0; i < streams; i++) {
    const id = 2 * i + 1;
    frames.push(encodeJsonFrame(FrameType.SYN, id, {}), encodeFrame(FrameType.DATA, 0, id, Buffer.from('x')));
  }
  const wire = Buffer.concat(frames); // allocated before the baseline, so it counts on both sides
  const before = await settledArrayBuffers();
  raw.send(wire);
  await waitFor('every first byte to be read', () => delivered === streams && server.streamCount === streams);
  const kept = (await settledArrayBuffers()) - before;
  // A copy made because the byte came before the stream's first _read kept a 512-byte slab each.
  assert.ok(kept < 64 * 1024, `${streams} idle streams kept ${kept} bytes of array buffers`);
  assert.equal(wire.length > 0, true);
  server.destroy();
  a.destroy();
});
