// Turns on a congested transport: a stream that waits for the transport keeps its place, and a stream
// that writes later waits behind it, even once the transport's backlog has fallen below the bound.
// The client's transport goes through a valve the test opens and closes, so the backlog can be held
// at any point between the bound and the 'drain' that ends the wait.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Duplex } from 'node:stream';
import { after, test } from 'node:test';
import type { Stream } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { waitFor } from '../helpers/wait.js';

/** Passes writes to `inner` while open; while shut it holds them, in order, until released. */
class Valve extends Duplex {
  open = true;
  readonly #held: (() => void)[] = [];

  constructor(readonly inner: Duplex) {
    super({ allowHalfOpen: false });
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.once('end', () => this.push(null));
    inner.once('close', () => this.destroy());
  }

  get held(): number {
    return this.#held.length;
  }

  override _read(): void {
    this.inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const pass = () => this.inner.write(chunk, cb);
    if (this.open) pass();
    else this.#held.push(pass);
  }

  /** Lets the first `n` held writes through, or all of them. */
  release(n = Infinity): void {
    for (; n > 0 && this.#held.length > 0; n--) this.#held.shift()!();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.inner.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.inner.destroy();
    cb(err);
  }
}

const KiB = 1024;
let pair: SessionPair | undefined;
after(async () => {
  await pair?.close();
});

test('a stream that writes while others wait for the transport waits behind them', async () => {
  let valve!: Valve;
  pair = await sessionPair(async () => {
    const d = duplexPair();
    valve = new Valve(d.a);
    return {
      client: valve,
      server: d.b,
      async close() {
        valve.destroy();
        d.b.destroy();
      },
    };
  });
  const p = pair;
  // The server keeps what each stream brings, and the order in which the streams' bytes came.
  const got = new Map<string, Buffer[]>();
  const order: string[] = [];
  p.server.on('stream', (s: Stream) => {
    const name = String((s.meta as { name: string }).name);
    got.set(name, []);
    s.on('data', (c: Buffer) => {
      got.get(name)!.push(c);
      if (order.at(-1) !== name) order.push(name);
    });
  });
  const bytes = (name: string) => (got.get(name) ?? []).reduce((n, c) => n + c.length, 0);
  const busy = p.client.open({ name: 'busy' });
  const late = p.client.open({ name: 'late' });
  busy.write('x');
  late.write('y');
  await waitFor('both streams to open', () => bytes('busy') === 1 && bytes('late') === 1);
  order.length = 0;
  for (const parts of got.values()) parts.length = 0;

  // The busy stream fills the backlog past its bound and waits with the rest of its writes.
  valve.open = false;
  const chunks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * KiB, i + 1));
  let busyTaken = 0;
  for (const c of chunks) busy.write(c, () => busyTaken++);
  await waitFor('the corked frames to reach the valve', () => valve.held > 0);
  const waiting = 8 - busyTaken;
  assert.ok(busyTaken >= 3 && waiting > 0, `${busyTaken} of 8 taken before the transport filled`);

  // The transport takes its writes one by one until one frame's worth is left: the backlog is below
  // the bound, and the drain that ends the wait is not due yet.
  for (let i = 0; i < 100 && valve.writableLength > 64 * KiB + 64; i++) {
    valve.release(1);
    await waitFor('the next write to reach the valve', () => valve.held > 0);
  }
  assert.ok(valve.writableLength <= 64 * KiB + 64, `${valve.writableLength} bytes left in the transport`);
  assert.ok(valve.writableNeedDrain, 'the transport has not drained');

  let lateTaken = false;
  late.write(Buffer.alloc(KiB, 0xee), () => {
    lateTaken = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(lateTaken, false, 'the late stream wrote past a stream that was waiting before it');
  assert.equal(busyTaken, 8 - waiting, 'the busy stream wrote nothing more either');

  // Once the transport drains, the waiting stream goes first, then the late one; nothing is lost.
  valve.open = true;
  valve.release();
  await waitFor('every byte to arrive', () => bytes('busy') === 8 * 64 * KiB && bytes('late') === KiB);
  assert.deepEqual(order, ['busy', 'late'], `the streams' bytes came in the order ${order.join(', ')}`);
  assert.ok(lateTaken && busyTaken === 8);
  const busyBytes = Buffer.concat(got.get('busy')!);
  for (let i = 0; i < 8; i++) {
    assert.ok(busyBytes.subarray(i * 64 * KiB, (i + 1) * 64 * KiB).equals(chunks[i]!), `chunk ${i + 1}`);
  }
  busy.end();
  late.end();
  await once(late, 'finish');
});
