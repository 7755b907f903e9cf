// How DATA leaves on the transport: the frames a stream writes in one turn share one writev, and the
// output the streams may queue on the transport stays bounded when the peer stops reading.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import type { Duplex } from 'node:stream';
import type { Stream } from '../../src/tunnel/stream.js';
import { MiB, readAll } from '../helpers/data.js';
import { sessionPair, type SessionPair } from '../helpers/session-pair.js';
import { transportPair } from '../helpers/transport-pair.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const pairs: SessionPair[] = [];

after(async () => {
  for (const p of pairs) await p.close();
});

/** Counts the transport's calls into the kernel (one per _write or _writev) and the bytes each carried. */
function countWrites(transport: Duplex): { calls: number[] } {
  const seen = { calls: [] as number[] };
  const t = transport as Duplex & {
    _write: (c: Buffer, e: BufferEncoding, cb: () => void) => void;
    _writev: (c: { chunk: Buffer }[], cb: () => void) => void;
  };
  const write = t._write.bind(t);
  const writev = t._writev.bind(t);
  t._write = (chunk, encoding, cb) => {
    seen.calls.push(chunk.length);
    write(chunk, encoding, cb);
  };
  t._writev = (chunks, cb) => {
    seen.calls.push(chunks.reduce((n, c) => n + c.chunk.length, 0));
    writev(chunks, cb);
  };
  return seen;
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test('eight 64 KiB writes of one turn leave in at most two transport writes, intact', async () => {
  const p = await sessionPair(transportPair('tcp'));
  pairs.push(p);
  const received = new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
    p.server.once('stream', (s: Stream) => readAll(s).then(resolve, reject));
  });
  const s = p.client.open({ kind: 'sink' });
  await waitFor('the ACK', () => s.accepted);
  const writes = countWrites(p.transports.client);
  const hash = createHash('sha256');
  for (let i = 0; i < 8; i++) {
    const chunk = pattern(64 * KiB, i);
    hash.update(chunk);
    s.write(chunk);
  }
  s.end();
  const got = await received;
  assert.equal(got.bytes, 512 * KiB);
  assert.equal(got.sha256, hash.digest('hex'));
  const data = writes.calls.filter((n) => n >= 64 * KiB);
  // Waiting for the socket's 16 KiB mark after every frame sent one frame per turn: eight writes.
  assert.ok(data.length <= 2, `DATA went out in ${data.length} writes: ${writes.calls.join(', ')}`);
});

test('a peer that stops reading: what waits on the transport stays near the batch bound', async () => {
  // A window far above the bound, so that only the session's own bound stops the stream.
  const p = await sessionPair(transportPair('tcp'), { window: 64 * MiB, sessionBuffer: 128 * MiB });
  pairs.push(p);
  p.server.once('stream', (s: Stream) => s.pause());
  const transport = p.transports.client;
  let maxQueued = 0;
  const write = transport.write.bind(transport) as (chunk: Buffer) => boolean;
  (transport as { write: (chunk: Buffer) => boolean }).write = (chunk: Buffer) => {
    const ok = write(chunk);
    maxQueued = Math.max(maxQueued, transport.writableLength);
    return ok;
  };
  // The reader side stops reading its socket too, so the kernel's buffers fill and ours must hold.
  p.transports.server.pause();
  const s = p.client.open({ kind: 'sink' });
  const chunk = pattern(64 * KiB, 7);
  let written = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (written < 48 * MiB) {
        written += chunk.length;
        if (!s.write(chunk)) return void s.once('drain', pump);
      }
      resolve();
    };
    pump();
    // The stream's own buffer fills once the session holds its frames back: done either way.
    void waitFor(
      'the stream to hold its writes back',
      () => s.writableLength >= s.writableHighWaterMark,
    ).then(resolve);
  });
  await waitFor('the transport to stop taking frames', () => transport.writableNeedDrain);
  // The bound (256 KiB) plus the frame that crossed it, and a few control frames.
  assert.ok(maxQueued <= 256 * KiB + 64 * KiB + 1024, `${maxQueued} bytes queued on the transport`);
});
