// The load generator. It connects to the controller relay's public port and drives one workload
// per request from the orchestrator. Every wait is bounded by a deadline or an explicit timeout.
import net from 'node:net';
import { type Args, sendReady, serveIpc } from '../common/ipc.js';
import { elapsedMs, MB, MiB, num, percentile, withTimeout } from '../common/stats.js';
import { HOST, Mode } from './common.js';

const CHUNK = Buffer.alloc(MiB, 0xa5);

function connect(port: number): net.Socket {
  return net.connect({ host: HOST, port, noDelay: true, allowHalfOpen: true });
}

function connected(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
}

/** Resolves on 'drain', 'close' or `stop`, so that a writer never waits on a dead socket. */
function drained(socket: net.Socket, stop?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      stop?.removeEventListener('abort', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
    stop?.addEventListener('abort', done);
  });
}

/** Writes up to `total` bytes with backpressure until done or `stop`; returns the bytes queued. */
async function pump(socket: net.Socket, total: number, stop?: AbortSignal): Promise<number> {
  let sent = 0;
  while (sent < total && stop?.aborted !== true && !socket.destroyed) {
    const n = Math.min(CHUNK.length, total - sent);
    const ok = socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    sent += n;
    if (!ok) await drained(socket, stop);
  }
  return sent;
}

/** Reads the sink's one-line byte count, which it sends after our FIN. */
function countLine(socket: net.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (s: string) => {
      text += s;
    });
    socket.once('end', () => resolve(Number.parseInt(text, 10)));
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed before the sink's count (got "${text}")`)));
  });
}

interface Transfer {
  bytes: number;
  ms: number;
  MBps: number;
}

/** One bulk upload to a DISCARD sink: first byte written until the sink reports the full count. */
async function transfer(port: number, bytes: number): Promise<Transfer> {
  const socket = connect(port);
  try {
    await connected(socket);
    const counted = countLine(socket);
    counted.catch(() => {});
    const start = process.hrtime.bigint();
    socket.write(Buffer.of(Mode.DISCARD));
    await pump(socket, bytes);
    socket.end();
    const count = await counted;
    const ms = elapsedMs(start);
    if (count !== bytes) throw new Error(`sink counted ${count} bytes, sent ${bytes}`);
    return { bytes, ms, MBps: bytes / MB / (ms / 1000) };
  } finally {
    socket.destroy();
  }
}

async function single(args: Args): Promise<Transfer> {
  return transfer(num(args, 'port'), num(args, 'bytes'));
}

async function parallel(args: Args): Promise<Transfer> {
  const port = num(args, 'port');
  const each = num(args, 'bytes');
  const n = num(args, 'streams');
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, () => transfer(port, each)));
  const ms = elapsedMs(start);
  return { bytes: each * n, ms, MBps: (each * n) / MB / (ms / 1000) };
}

const EXCHANGE_BYTES = 100;
const EXCHANGE_REQUEST = Buffer.concat([Buffer.of(Mode.ECHO), Buffer.alloc(EXCHANGE_BYTES, 0x61)]);

/** One op: connect, send 100 B, receive the 100 B echo, end, and wait for the peer's FIN. */
function exchangeOnce(port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port);
    let received = 0;
    const timer = setTimeout(() => socket.destroy(new Error('exchange timed out')), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= EXCHANGE_BYTES) socket.end();
    });
    socket.on('end', () => {});
    socket.once('error', reject);
    socket.once('close', () => {
      clearTimeout(timer);
      if (received === EXCHANGE_BYTES) resolve();
      else reject(new Error(`echo returned ${received} of ${EXCHANGE_BYTES} bytes`));
    });
    socket.write(EXCHANGE_REQUEST);
  });
}

async function exchange(args: Args): Promise<unknown> {
  const port = num(args, 'port');
  const durationMs = num(args, 'durationMs');
  const concurrency = num(args, 'concurrency');
  const deadline = performance.now() + durationMs;
  let ops = 0;
  const errors: string[] = [];
  const worker = async () => {
    while (performance.now() < deadline && errors.length < 100) {
      try {
        await exchangeOnce(port, 10_000);
        ops += 1;
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = elapsedMs(start);
  return { ops, ms, perSec: ops / (ms / 1000), errors: errors.length, firstError: errors[0] ?? null };
}

const PING = Buffer.alloc(64, 0x70);

/** Sequential 64-byte round trips on one ECHO connection until the deadline; latencies in µs. */
async function pingPong(port: number, deadline: number, out: number[]): Promise<void> {
  const socket = connect(port);
  await connected(socket);
  socket.write(Buffer.of(Mode.ECHO));
  let received = 0;
  let wake: (() => void) | null = null;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received >= PING.length && wake !== null) wake();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  while (performance.now() < deadline && !socket.destroyed) {
    const start = process.hrtime.bigint();
    const back = new Promise<void>((resolve) => {
      wake = resolve;
    });
    socket.write(PING);
    await withTimeout(Promise.race([back, closed]), 10_000, 'ping-pong round trip');
    wake = null;
    if (received < PING.length) throw new Error('echo connection closed mid round trip');
    received -= PING.length;
    out.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  socket.end();
  await withTimeout(closed, 10_000, 'ping-pong close');
}

async function rtt(args: Args): Promise<unknown> {
  const port = num(args, 'port');
  const deadline = performance.now() + num(args, 'durationMs');
  const samples: number[] = [];
  await Promise.all(Array.from({ length: num(args, 'streams') }, () => pingPong(port, deadline, samples)));
  const sorted = Float64Array.from(samples).sort();
  return { count: sorted.length, p50us: percentile(sorted, 50), p99us: percentile(sorted, 99) };
}

// --- idle streams ---

const idle: net.Socket[] = [];

/** Opens one HOLD connection: 1 byte each way, then it stays idle. */
function openIdle(port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port);
    const timer = setTimeout(() => socket.destroy(new Error('idle open timed out')), timeoutMs);
    socket.once('data', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', reject);
    socket.write(Buffer.of(Mode.HOLD));
  });
}

async function idleOpen(args: Args): Promise<unknown> {
  const port = num(args, 'port');
  const n = num(args, 'count');
  let next = 0;
  const errors: string[] = [];
  const worker = async () => {
    while (next < n && errors.length < 100) {
      next += 1;
      try {
        idle.push(await openIdle(port, 30_000));
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: num(args, 'concurrency') }, worker));
  return { opened: idle.length, ms: elapsedMs(start), errors: errors.length, firstError: errors[0] ?? null };
}

/** Ends every idle connection and waits for each to close; stragglers are destroyed at the deadline. */
async function idleClose(args: Args): Promise<unknown> {
  const sockets = idle.splice(0);
  const closes = sockets.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
  for (const s of sockets) s.end();
  let forced = 0;
  try {
    await withTimeout(Promise.all(closes), num(args, 'timeoutMs'), 'closing idle streams');
  } catch {
    for (const s of sockets) {
      if (s.destroyed) continue;
      forced += 1;
      s.destroy();
    }
  }
  return { closed: sockets.length - forced, forced };
}

// --- slow reader beside a fast stream ---

async function slow(args: Args): Promise<unknown> {
  const port = num(args, 'port');
  const slowMs = num(args, 'slowMs');
  const socket = connect(port);
  socket.on('error', () => {});
  await connected(socket);
  socket.write(Buffer.of(Mode.SLOW));
  const slowDone = pump(socket, num(args, 'slowBytes'), AbortSignal.timeout(slowMs));
  try {
    await new Promise((resolve) => setTimeout(resolve, num(args, 'fastDelayMs')));
    const fast = await transfer(port, num(args, 'fastBytes'));
    const offered = await slowDone;
    return { fast, slowOffered: offered - socket.writableLength, slowMs };
  } finally {
    socket.destroy();
  }
}

serveIpc({ single, parallel, exchange, rtt, idleOpen, idleClose, slow });
sendReady({});
