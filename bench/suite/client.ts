// The Node load generator, a process of its own: bulk downloads and uploads, WebSocket echo, idle
// WebSockets and the slow reader, one request from the orchestrator at a time, and the raw TCP
// workloads (tcp.ts). Small GETs are wrk's and h2load's. Every request goes to 127.0.0.1:port with
// Host bench.test, over TLS when the orchestrator says `tls: true`, and every wait is bounded.
import http from 'node:http';
import https from 'node:https';
import { WebSocket } from 'ws';
import { type Args, sendReady, serveIpc } from '../common/ipc.js';
import { elapsedMs, MB, num, percentile, withTimeout } from '../common/stats.js';
import { BENCH_HOST, HOST, SLOW_READ_BPS, SMALL_BODY } from './common.js';
import { tcpBulk, tcpPingPong, tcpProbe } from './tcp.js';

const CHUNK = Buffer.alloc(256 * 1024, 0x61);

interface Transfer {
  bytes: number;
  ms: number;
  MBps: number;
}

function transfer(bytes: number, start: bigint): Transfer {
  const ms = elapsedMs(start);
  return { bytes, ms, MBps: bytes / MB / (ms / 1000) };
}

/** Where the load goes: the path's port, and whether it speaks TLS there. */
interface Dest {
  port: number;
  tls: boolean;
}

function dest(args: Args): Dest {
  return { port: num(args, 'port'), tls: args.tls === true };
}

// The bench's self-signed certificate is not verified (nor is it by wrk or h2load); SNI names the
// bench's host, as a browser's would.
const TLS_OPTIONS = { rejectUnauthorized: false, servername: BENCH_HOST };

function request(to: Dest, method: string, path: string, headers: http.OutgoingHttpHeaders = {}) {
  const options = {
    host: HOST,
    port: to.port,
    method,
    path,
    agent: false as const,
    headers: { host: BENCH_HOST, ...headers },
  };
  const req = to.tls ? https.request({ ...options, ...TLS_OPTIONS }) : http.request(options);
  req.on('socket', (socket) => socket.setNoDelay(true));
  return req;
}

function response(req: http.ClientRequest): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
}

/** Reads a response to its end; `onData` sees each chunk. Rejects on a status other than 200. */
function consume(res: http.IncomingMessage, onData: (chunk: Buffer) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    if (res.statusCode !== 200) {
      res.resume();
      return reject(new Error(`status ${res.statusCode}`));
    }
    res.on('data', onData);
    res.once('end', resolve);
    res.once('error', reject);
    res.once('close', () => {
      if (!res.complete) reject(new Error('response closed before its end'));
    });
  });
}

/** One GET /small: checks the path answers 200 with the expected body. */
async function probe(args: Args): Promise<unknown> {
  const req = request(dest(args), 'GET', '/small');
  req.end();
  const res = await withTimeout(response(req), 10_000, 'GET /small');
  let body = '';
  await withTimeout(
    consume(res, (c) => (body += c.toString('latin1'))),
    10_000,
    'GET /small body',
  );
  if (body !== SMALL_BODY) throw new Error(`GET /small answered ${JSON.stringify(body.slice(0, 80))}`);
  return { ok: true, via: res.headers.via ?? null };
}

async function downloadOnce(port: Dest, bytes: number): Promise<Transfer> {
  const start = process.hrtime.bigint();
  const req = request(port, 'GET', `/bytes?n=${bytes}`);
  req.end();
  try {
    const res = await response(req);
    let got = 0;
    await consume(res, (chunk) => {
      got += chunk.length;
    });
    if (got !== bytes) throw new Error(`download got ${got} of ${bytes} bytes`);
    return transfer(bytes, start);
  } finally {
    req.destroy();
  }
}

function download(args: Args): Promise<Transfer> {
  return downloadOnce(dest(args), num(args, 'bytes'));
}

async function parallel(args: Args): Promise<Transfer> {
  const port = dest(args);
  const each = num(args, 'bytes');
  const n = num(args, 'streams');
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, () => downloadOnce(port, each)));
  return transfer(each * n, start);
}

function drained(req: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      req.off('drain', done);
      req.off('close', done);
      resolve();
    };
    req.on('drain', done);
    req.on('close', done);
  });
}

/** POST /sink with `bytes` of body; timed from the first byte until the origin's count arrives. */
async function upload(args: Args): Promise<Transfer> {
  const bytes = num(args, 'bytes');
  const req = request(dest(args), 'POST', '/sink', {
    'content-type': 'application/octet-stream',
    'content-length': bytes,
  });
  const answered = response(req);
  answered.catch(() => {});
  const start = process.hrtime.bigint();
  try {
    let sent = 0;
    while (sent < bytes && !req.destroyed) {
      const n = Math.min(CHUNK.length, bytes - sent);
      sent += n;
      if (!req.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) await drained(req);
    }
    req.end();
    const res = await answered;
    let body = '';
    await consume(res, (c) => (body += c.toString('latin1')));
    const counted = (JSON.parse(body) as { bytes: number }).bytes;
    if (counted !== bytes) throw new Error(`origin counted ${counted} bytes, sent ${bytes}`);
    return transfer(bytes, start);
  } finally {
    req.destroy();
  }
}

// --- WebSockets ---

const PAYLOAD = Buffer.alloc(64, 0x77);

function openWs(to: Dest, timeoutMs: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${to.tls ? 'wss' : 'ws'}://${HOST}:${to.port}/ws`, {
      headers: { host: BENCH_HOST },
      perMessageDeflate: false,
      ...(to.tls ? TLS_OPTIONS : {}),
    });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('WebSocket open timed out'));
    }, timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      ws.off('error', reject);
      ws.on('error', () => {});
      resolve(ws);
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`upgrade answered ${res.statusCode}`));
    });
  });
}

/** One message there and back: proves the whole path carries this connection. */
function echoOnce(ws: WebSocket, timeoutMs: number): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      ws.once('message', () => resolve());
      ws.send(PAYLOAD);
    }),
    timeoutMs,
    'first echo',
  );
}

interface Opened {
  sockets: WebSocket[];
  ms: number;
  errors: number;
  firstError: string | null;
}

/**
 * Opens `count` WebSockets, at most `concurrency` handshakes at a time (so no listen backlog along
 * the path overflows), each confirmed with one echo.
 */
async function openMany(port: Dest, count: number, concurrency: number): Promise<Opened> {
  const sockets: WebSocket[] = [];
  const errors: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count && errors.length < 100) {
      next += 1;
      try {
        const ws = await openWs(port, 30_000);
        sockets.push(ws);
        await echoOnce(ws, 30_000);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  };
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { sockets, ms: elapsedMs(start), errors: errors.length, firstError: errors[0] ?? null };
}

/** Closes every socket (close handshake) and waits; stragglers are terminated at the deadline. */
async function closeAll(sockets: WebSocket[], timeoutMs: number): Promise<number> {
  const closed = sockets.map((ws) =>
    ws.readyState === WebSocket.CLOSED
      ? Promise.resolve()
      : new Promise<void>((resolve) => ws.once('close', () => resolve())),
  );
  for (const ws of sockets) ws.close();
  try {
    await withTimeout(Promise.all(closed), timeoutMs, 'closing WebSockets');
    return 0;
  } catch {
    const left = sockets.filter((ws) => ws.readyState !== WebSocket.CLOSED);
    for (const ws of left) ws.terminate();
    return left.length;
  }
}

/**
 * `conns` connections, each with one 64-byte message in flight: it sends the next as soon as the echo
 * is back. The first `warmMs` are not counted; then messages are counted for `durationMs`.
 */
async function wsEcho(args: Args): Promise<unknown> {
  const opened = await openMany(dest(args), num(args, 'conns'), num(args, 'concurrency'));
  if (opened.errors > 0) {
    await closeAll(opened.sockets, 10_000);
    throw new Error(
      `opened ${opened.sockets.length} WebSockets, ${opened.errors} failed: ${opened.firstError}`,
    );
  }
  const t0 = performance.now() + num(args, 'warmMs');
  const t1 = t0 + num(args, 'durationMs');
  const rtts: number[] = [];
  let received = 0;
  let echoes = 0;
  let inFlight = 0;
  let allBack: () => void = () => {};
  const loop = (ws: WebSocket) => {
    let sentAt = 0;
    const sendNext = () => {
      sentAt = performance.now();
      inFlight += 1;
      ws.send(PAYLOAD);
    };
    ws.on('message', () => {
      const now = performance.now();
      inFlight -= 1;
      echoes += 1;
      if (now >= t0 && now <= t1) {
        received += 1;
        if (sentAt >= t0) rtts.push(now - sentAt);
      }
      if (now < t1) sendNext();
      else if (inFlight === 0) allBack();
    });
    sendNext();
  };
  const back = new Promise<void>((resolve) => {
    allBack = resolve;
  });
  for (const ws of opened.sockets) loop(ws);
  await new Promise((resolve) => setTimeout(resolve, t1 - performance.now()));
  const stuck = await withTimeout(back, 10_000, 'last echoes').then(
    () => 0,
    () => inFlight,
  );
  const forced = await closeAll(opened.sockets, 10_000);
  const sorted = Float64Array.from(rtts).sort();
  return {
    conns: opened.sockets.length,
    openMs: opened.ms,
    messages: received,
    /** Every echo, the warm-up's and the last ones' too: what the hops' CPU over the whole call paid for. */
    echoes,
    msgPerSec: received / (num(args, 'durationMs') / 1000),
    p50ms: percentile(sorted, 50),
    p99ms: percentile(sorted, 99),
    stuck,
    forced,
  };
}

let idle: WebSocket[] = [];

async function idleOpen(args: Args): Promise<unknown> {
  const r = await openMany(dest(args), num(args, 'count'), num(args, 'concurrency'));
  idle.push(...r.sockets);
  return { opened: r.sockets.length, ms: r.ms, errors: r.errors, firstError: r.firstError };
}

async function idleClose(args: Args): Promise<unknown> {
  const sockets = idle;
  idle = [];
  const forced = await closeAll(sockets, num(args, 'timeoutMs'));
  return { closed: sockets.length - forced, forced };
}

// --- slow reader beside a fast download ---

/**
 * GET /bytes offering `slowBytes`, read at SLOW_READ_BPS (the response is paused between chunks) for
 * `slowMs`, then dropped. `fastDelayMs` in, a full-speed download of `fastBytes` runs beside it.
 */
async function slow(args: Args): Promise<unknown> {
  const port = dest(args);
  const slowMs = num(args, 'slowMs');
  const req = request(port, 'GET', `/bytes?n=${num(args, 'slowBytes')}`);
  req.end();
  let read = 0;
  let timer: NodeJS.Timeout | null = null;
  const started = performance.now();
  const res = await withTimeout(response(req), 10_000, 'slow GET /bytes');
  if (res.statusCode !== 200) throw new Error(`slow GET /bytes answered ${res.statusCode}`);
  let freeAt = performance.now();
  res.on('data', (chunk: Buffer) => {
    read += chunk.length;
    const now = performance.now();
    freeAt = Math.max(freeAt, now) + (chunk.length / SLOW_READ_BPS) * 1000;
    if (freeAt - now > 5 && timer === null) {
      res.pause();
      timer = setTimeout(() => {
        timer = null;
        res.resume();
      }, freeAt - now);
    }
  });
  res.on('error', () => {});
  try {
    await new Promise((resolve) => setTimeout(resolve, num(args, 'fastDelayMs')));
    const fast = await downloadOnce(port, num(args, 'fastBytes'));
    const left = slowMs - (performance.now() - started);
    if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    const slowComplete = res.complete;
    return { fast, slowRead: read, slowMs: performance.now() - started, slowComplete };
  } finally {
    if (timer !== null) clearTimeout(timer);
    req.destroy();
  }
}

serveIpc({
  probe,
  download,
  upload,
  parallel,
  wsEcho,
  idleOpen,
  idleClose,
  slow,
  tcpProbe,
  tcpBulk,
  tcpPingPong,
});
sendReady({});
