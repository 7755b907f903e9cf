// The relay's direct paths through a stream (Stream.send, Stream.readDirect) and the session's batch
// of small DATA frames, over real TCP: order, backpressure and ends must be what write() and 'data'
// give, for the first stream and the hundredth, with small and large pieces mixed in one turn.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { Session } from '../../src/tunnel/session.js';
import { readInto, type Stream } from '../../src/tunnel/stream.js';
import { readAll } from '../helpers/data.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { transportPair } from '../helpers/transport-pair.js';
import { waitFor } from '../helpers/wait.js';

const tcp = transportPair('tcp');
const KiB = 1024;

/** `n` bytes that differ by position and by `seed`, so a piece out of place shows. */
function piece(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

/** Collects a stream's bytes through readDirect, with a sink that says "full" when `full()` says so. */
function direct(s: Stream, full: () => boolean = () => false) {
  const chunks: Buffer[] = [];
  const ended = once(s, 'end');
  s.readDirect((c) => {
    chunks.push(Buffer.from(c));
    return !full();
  });
  return { chunks, bytes: () => Buffer.concat(chunks), ended };
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function nextStream(session: Session): Promise<Stream> {
  return once(session, 'stream').then(([s]) => s as Stream);
}

/** A stream whose peer reads directly into a sink that takes `first` and then says it is full. */
async function fullAfterFirst(p: SessionPair, first: Buffer) {
  const arrived = nextStream(p.server);
  const s = p.client.open({});
  s.send(first);
  const peer = await arrived;
  const r = direct(peer, () => true);
  await waitFor('the first piece', () => r.chunks.length === 1);
  return { s, peer, r };
}

describe('the direct paths and the small-frame batch', { timeout: 120_000 }, () => {
  test('small and large pieces written in one turn arrive whole and in order, on 1 and on 300 streams', async () => {
    const p = await sessionPair(tcp);
    try {
      for (const count of [1, 300]) {
        const expected: Buffer[] = [];
        const got: Promise<{ bytes: number; sha256: string }>[] = [];
        const accepted: Stream[] = [];
        p.server.on('stream', (s: Stream) => accepted.push(s));
        const streams = Array.from({ length: count }, () => p.client.open({}));
        await waitFor('streams to arrive', () => accepted.length === count);
        for (const s of accepted) got.push(readAll(s));
        // One turn: a 64-byte piece, a 10 KiB one, a 2 KiB one (the batch's limit), 2 KiB + 1, then
        // small ones again, each through send() and write() alike. 300 × 100 B overflows one batch.
        streams.forEach((s, i) => {
          const parts = [
            piece(64, i),
            piece(10 * KiB, i + 1),
            piece(2 * KiB, i + 2),
            piece(2 * KiB + 1, i + 3),
          ];
          parts.push(piece(100, i + 4), piece(1, i + 5));
          expected.push(Buffer.concat(parts));
          parts.forEach((part, j) => (j % 2 === 0 ? s.send(part) : s.write(part)));
          s.end();
        });
        const results = await Promise.all(got);
        results.forEach((r, i) => {
          assert.equal(r.bytes, expected[i]!.length, `stream ${i + 1} of ${count}`);
          assert.equal(r.sha256, sha256(expected[i]!), `stream ${i + 1} of ${count}`);
        });
        p.server.removeAllListeners('stream');
      }
    } finally {
      await p.close();
    }
  });

  test('a reset written right after small DATA in the same turn comes after it', async () => {
    const p = await sessionPair(tcp);
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      s.send(piece(10, 1));
      const peer = await arrived;
      const seen: Buffer[] = [];
      peer.on('data', (c: Buffer) => seen.push(Buffer.from(c)));
      const failed = once(peer, 'error').catch((e: unknown) => e);
      s.send(piece(50, 2));
      s.send(piece(60, 3));
      s.reset(8, 'done with it');
      await failed;
      assert.deepEqual(Buffer.concat(seen), Buffer.concat([piece(10, 1), piece(50, 2), piece(60, 3)]));
    } finally {
      await p.close();
    }
  });

  test('send() past the credit queues the rest and keeps the order; send() after end() fails as write() does', async () => {
    const p = await sessionPair(tcp, { window: 64 * KiB });
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      const parts = Array.from({ length: 300 }, (_, i) => piece(1000 + i, i));
      let refusedOnce = false;
      for (const part of parts) if (!s.send(part)) refusedOnce = true;
      s.end();
      const peer = await arrived;
      const r = direct(peer);
      await r.ended;
      assert.ok(refusedOnce, 'send() returned false once the bytes were over the high-water mark');
      assert.deepEqual(r.bytes(), Buffer.concat(parts));
      const errored = once(s, 'error');
      s.send(piece(1, 0));
      const [err] = (await errored) as [NodeJS.ErrnoException];
      assert.equal(err.code, 'ERR_STREAM_WRITE_AFTER_END', 'a send after end() is refused as a write is');
    } finally {
      await p.close();
    }
  });

  test('readDirect hands over what arrived before it first, then holds while the sink is full, until resume()', async () => {
    const p = await sessionPair(tcp, { window: 64 * KiB });
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      s.write(piece(3000, 1));
      const peer = await arrived;
      peer.pause();
      s.write(piece(5000, 2));
      await waitFor('the early bytes to wait in the stream', () => peer.recvWindow <= 64 * KiB - 8000);
      let full = true;
      const r = direct(peer, () => full);
      assert.equal(r.chunks.length, 1, 'one piece, then the sink said full');
      assert.deepEqual(r.bytes(), piece(3000, 1).subarray(0, r.bytes().length));
      // Held: the peer's credit runs out and the writer stops, nothing is lost or reordered.
      const rest = Array.from({ length: 100 }, (_, i) => piece(1500, i + 3));
      for (const part of rest) s.write(part);
      s.end();
      await waitFor('the sender to run out of credit', () => s.sendCredit < 1500);
      assert.equal(r.chunks.length, 1);
      full = false;
      peer.resume();
      await r.ended;
      assert.deepEqual(r.bytes(), Buffer.concat([piece(3000, 1), piece(5000, 2), ...rest]));
    } finally {
      await p.close();
    }
  });

  test("readDirect gives what the Readable's own buffer holds before the stream's queue", async () => {
    const p = await sessionPair(tcp);
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      const parts = [piece(70 * KiB, 1), piece(3 * KiB, 2)];
      for (const part of parts) s.write(part);
      const peer = await arrived;
      await waitFor('all of it to arrive', () => peer.held === 73 * KiB);
      peer.read(0); // fills the Readable's buffer to its high-water mark; the rest stays queued
      assert.ok(peer.readableLength > 0 && peer.readableLength < 73 * KiB, `${peer.readableLength}`);
      s.end();
      const r = direct(peer);
      await r.ended;
      assert.deepEqual(r.bytes(), Buffer.concat(parts));
    } finally {
      await p.close();
    }
  });

  test("pause() holds a direct reader's bytes and 'end' waits behind them", async () => {
    const p = await sessionPair(tcp);
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      s.send(piece(10, 0));
      const peer = await arrived;
      const r = direct(peer);
      await waitFor('the first piece', () => r.chunks.length === 1);
      peer.pause();
      s.send(piece(20, 1));
      s.end();
      let ended = false;
      void r.ended.then(() => (ended = true));
      await waitFor('the FIN to arrive', () => peer.remoteFin);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(ended, false, "no 'end' while bytes are held");
      assert.equal(r.chunks.length, 1);
      peer.resume();
      await r.ended;
      assert.deepEqual(r.bytes(), Buffer.concat([piece(10, 0), piece(20, 1)]));
    } finally {
      await p.close();
    }
  });

  test('bytes held for a full sink after both FINs still count against the session bound until taken', async () => {
    const p = await sessionPair(tcp);
    try {
      const { s, peer, r } = await fullAfterFirst(p, piece(100, 1));
      s.end(piece(9000, 2));
      peer.end();
      await waitFor('the stream to leave the table', () => p.server.streamCount === 0);
      assert.equal(p.server.stats().heldBytes, 9000, 'the held bytes still count');
      peer.resume();
      await r.ended;
      assert.equal(p.server.stats().heldBytes, 0);
      assert.deepEqual(r.bytes(), Buffer.concat([piece(100, 1), piece(9000, 2)]));
    } finally {
      await p.close();
    }
  });

  test('a reset while bytes are held drops them: the sink is called no more, and the stream errors', async () => {
    const p = await sessionPair(tcp);
    try {
      const { s, peer, r } = await fullAfterFirst(p, piece(10, 1));
      r.ended.catch(() => {}); // no 'end' comes: the reset ends it
      const failed = once(peer, 'error').catch((e: unknown) => e);
      s.write(piece(5000, 2));
      await waitFor('the second piece to wait', () => peer.held >= 5010);
      s.reset(8, 'gone');
      await failed;
      peer.resume();
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(r.chunks.length, 1);
      await waitFor('the bound to be released', () => p.server.stats().heldBytes === 0);
    } finally {
      await p.close();
    }
  });

  test('readDirect refuses a stream that has a data listener, and readInto then keeps the Readable path', async () => {
    const p = await sessionPair(tcp);
    try {
      const arrived = nextStream(p.server);
      const s = p.client.open({});
      s.end(piece(100, 9));
      const peer = await arrived;
      let counted = 0;
      peer.on('data', (c: Buffer) => (counted += c.length));
      assert.throws(() => peer.readDirect(() => true), /data listener/);
      const got: Buffer[] = [];
      readInto(peer, (c) => (got.push(Buffer.from(c)), true));
      await once(peer, 'end');
      assert.equal(counted, 100);
      assert.deepEqual(Buffer.concat(got), piece(100, 9));
    } finally {
      await p.close();
    }
  });
});
