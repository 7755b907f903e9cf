// splice(): the pieces a socket gets in one turn leave in one write, a small chunk leaves at once,
// and a writer whose peer stops reading holds a bounded amount before it pauses its reader.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { after, test } from 'node:test';
import { oneWay } from '../../src/proxy/splice.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const servers: Server[] = [];
const sockets: Socket[] = [];

after(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

/** A server on 127.0.0.1 port 0 and a client connected to it; the server's side is handed back too. */
async function socketPair(): Promise<{ client: Socket; server: Socket }> {
  const server = createServer({ allowHalfOpen: true });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect({ port: (server.address() as { port: number }).port, host: '127.0.0.1' });
  await once(client, 'connect');
  const [peer] = await accepted;
  sockets.push(client, peer);
  return { client, server: peer };
}

function countWrites(socket: Socket): number[] {
  const calls: number[] = [];
  const t = socket as unknown as {
    _write: (c: Buffer, e: BufferEncoding, cb: () => void) => void;
    _writev: (c: { chunk: Buffer }[], cb: () => void) => void;
  };
  const write = t._write.bind(socket);
  const writev = t._writev.bind(socket);
  t._write = (chunk, encoding, cb) => {
    calls.push(1);
    write(chunk, encoding, cb);
  };
  t._writev = (chunks, cb) => {
    calls.push(chunks.length);
    writev(chunks, cb);
  };
  return calls;
}

function sha(chunks: Buffer[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

function readAll(socket: Socket): Promise<{ bytes: number; sha256: string }> {
  const h = createHash('sha256');
  let bytes = 0;
  socket.on('data', (c: Buffer) => {
    h.update(c);
    bytes += c.length;
  });
  return once(socket, 'end').then(() => ({ bytes, sha256: h.digest('hex') }));
}

function chunksOf(count: number, size: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => Buffer.alloc(size, i + 1));
}

test('sixteen 32 KiB pieces pushed in one turn reach the socket in one writev, in order', async () => {
  const { client, server } = await socketPair();
  const from = new PassThrough();
  const calls = countWrites(client);
  const got = readAll(server);
  oneWay(from as Duplex, client);
  const chunks = chunksOf(16, 32 * KiB);
  for (const c of chunks) from.write(c);
  from.end();
  const result = await got;
  assert.equal(result.bytes, 16 * 32 * KiB);
  assert.equal(result.sha256, sha(chunks));
  // Written as they came, each piece was a write(2) of its own: sixteen calls.
  assert.ok(calls.length <= 2, `the socket was written ${calls.length} times: ${calls.join(', ')}`);
});

test('a small chunk is written at once, not held for the turn', async () => {
  const { client, server } = await socketPair();
  const from = new PassThrough();
  const calls = countWrites(client);
  oneWay(from as Duplex, client);
  const arrived = once(server, 'data') as Promise<[Buffer]>;
  from.write(Buffer.alloc(64, 0x70));
  // PassThrough emits its data synchronously to a flowing reader: the write happened in write().
  assert.deepEqual(calls, [1]);
  const [chunk] = await arrived;
  assert.equal(chunk.length, 64);
});

test('a peer that stops reading: the writer holds at most its bound, then pauses the reader', async () => {
  const { client, server } = await socketPair();
  server.pause();
  const from = new PassThrough({ highWaterMark: 64 * KiB });
  oneWay(from as Duplex, client);
  const chunk = Buffer.alloc(64 * KiB, 0x61);
  let sent = 0;
  let maxQueued = 0;
  // Feed until the source itself reports backpressure: by then the splice has paused it.
  for (let i = 0; i < 4096; i++) {
    sent += chunk.length;
    const ok = from.write(chunk);
    maxQueued = Math.max(maxQueued, client.writableLength);
    if (!ok) {
      await waitFor('the splice to pause its reader', () => from.isPaused() || client.writableNeedDrain);
      if (from.isPaused()) break;
      await once(from, 'drain');
    }
  }
  assert.ok(from.isPaused(), 'the reader was never paused');
  // 256 KiB, plus the chunk that crossed it.
  assert.ok(maxQueued <= 256 * KiB + 64 * KiB, `${maxQueued} bytes queued on the socket`);
  from.end();
  let bytes = 0;
  server.on('data', (c: Buffer) => (bytes += c.length));
  server.resume();
  await once(server, 'end');
  assert.equal(bytes, sent);
});
