// The load generator's raw TCP workloads (issue #15), run inside client.ts: a bulk transfer from the
// origin's TCP target, 64-byte ping-pong on many connections, and a probe that proves the path
// carries bytes both ways (an echo, or Redis's PING). Nothing here parses anything but the target's
// one-byte header (common.ts), so every TCP path carries exactly the same bytes.
import net from 'node:net';
import type { Args } from '../common/ipc.js';
import { elapsedMs, MB, num, percentile, withTimeout } from '../common/stats.js';
import { HOST, TCP_ECHO, TCP_SOURCE } from './common.js';

const PING = Buffer.alloc(64, 0x70);

function connect(port: number, timeoutMs: number): Promise<net.Socket> {
  return withTimeout(
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: HOST, port, noDelay: true });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    }),
    timeoutMs,
    `TCP connect to ${port}`,
  );
}

/** Resolves once `want` bytes have arrived on `socket`, with what came; rejects if it closes first. */
function readExactly(socket: net.Socket, want: number, timeoutMs: number): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      let got = 0;
      const onData = (chunk: Buffer) => {
        parts.push(chunk);
        got += chunk.length;
        if (got >= want) {
          cleanup();
          resolve(Buffer.concat(parts));
        }
      };
      const onClose = () => {
        cleanup();
        reject(new Error(`connection closed after ${got} of ${want} bytes`));
      };
      const cleanup = () => {
        socket.off('data', onData);
        socket.off('close', onClose);
      };
      socket.on('data', onData);
      socket.once('close', onClose);
    }),
    timeoutMs,
    `reading ${want} bytes`,
  );
}

/** One echo of 64 bytes (or Redis's PING → +PONG): the path carries this connection both ways. */
export async function tcpProbe(args: Args): Promise<unknown> {
  const socket = await connect(num(args, 'port'), 10_000);
  socket.on('error', () => {});
  try {
    if (args.redis === true) {
      socket.write('PING\r\n');
      const answer = (await readExactly(socket, 7, 10_000)).toString('latin1');
      if (answer !== '+PONG\r\n') throw new Error(`PING answered ${JSON.stringify(answer)}`);
    } else {
      socket.write(Buffer.concat([Buffer.from([TCP_ECHO]), PING]));
      const echo = await readExactly(socket, PING.length, 10_000);
      if (!echo.equals(PING)) throw new Error('the echo differs from what was sent');
    }
    return { ok: true };
  } finally {
    socket.destroy();
  }
}

/**
 * Asks the target for `bytes` and reads them to the FIN: MB/s from the request to the last byte
 * (the connection is already open: its setup is the ping-pong's business).
 */
export async function tcpBulk(args: Args): Promise<unknown> {
  const bytes = num(args, 'bytes');
  const socket = await connect(num(args, 'port'), 10_000);
  socket.on('error', () => {});
  try {
    const head = Buffer.alloc(9);
    head[0] = TCP_SOURCE;
    head.writeBigUInt64BE(BigInt(bytes), 1);
    const start = process.hrtime.bigint();
    let got = 0;
    const ended = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        got += chunk.length;
      });
      socket.once('end', resolve);
      socket.once('close', () => reject(new Error(`closed after ${got} of ${bytes} bytes`)));
    });
    socket.write(head);
    await ended;
    if (got !== bytes) throw new Error(`TCP bulk got ${got} of ${bytes} bytes`);
    const ms = elapsedMs(start);
    return { bytes, ms, MBps: bytes / MB / (ms / 1000) };
  } finally {
    socket.destroy();
  }
}

/**
 * `conns` connections, each with one 64-byte message in flight: the next goes as soon as its echo is
 * whole. The first `warmMs` are not counted; round trips are counted for `durationMs`.
 */
export async function tcpPingPong(args: Args): Promise<unknown> {
  const port = num(args, 'port');
  const conns = num(args, 'conns');
  const sockets: net.Socket[] = [];
  const openStart = process.hrtime.bigint();
  try {
    for (let i = 0; i < conns; i++) {
      const socket = await connect(port, 10_000);
      socket.on('error', () => {});
      sockets.push(socket);
      socket.write(Buffer.from([TCP_ECHO]));
    }
    const openMs = elapsedMs(openStart);
    const t0 = performance.now() + num(args, 'warmMs');
    const t1 = t0 + num(args, 'durationMs');
    const rtts: number[] = [];
    let received = 0;
    let running = sockets.length;
    let allDone: () => void = () => {};
    const done = new Promise<void>((resolve) => (allDone = resolve));
    const loop = (socket: net.Socket) => {
      let sentAt = 0;
      let pending = 0;
      const send = () => {
        sentAt = performance.now();
        pending = PING.length;
        socket.write(PING);
      };
      const stop = () => {
        socket.off('data', onData);
        if (--running === 0) allDone();
      };
      const onData = (chunk: Buffer) => {
        pending -= chunk.length;
        if (pending > 0) return;
        const now = performance.now();
        if (now >= t0 && now <= t1) {
          received += 1;
          if (sentAt >= t0) rtts.push(now - sentAt);
        }
        if (now < t1) send();
        else stop();
      };
      socket.on('data', onData);
      socket.once('close', () => {
        if (socket.listenerCount('data') > 0) stop();
      });
      send();
    };
    for (const socket of sockets) loop(socket);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, t1 - performance.now())));
    const stuck = await withTimeout(done, 10_000, 'last echoes').then(
      () => 0,
      () => running,
    );
    const sorted = Float64Array.from(rtts).sort();
    return {
      conns: sockets.length,
      openMs,
      roundTrips: received,
      perSec: received / (num(args, 'durationMs') / 1000),
      p50ms: percentile(sorted, 50),
      p99ms: percentile(sorted, 99),
      stuck,
    };
  } finally {
    await closeAll(sockets);
  }
}

/** Half-closes each connection and waits for the target's FIN back, then destroys what is left. */
async function closeAll(sockets: net.Socket[]): Promise<void> {
  const closed = sockets.map(
    (s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve()))),
  );
  for (const s of sockets) {
    s.resume();
    s.end();
  }
  await withTimeout(Promise.all(closed), 10_000, 'closing TCP connections').catch(() => {});
  for (const s of sockets) s.destroy();
}
