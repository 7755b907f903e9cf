// The demo service `sluice dev` puts behind the tunnel (DESIGN §5): a target that shows what the
// tunnel does to a request. It exercises each kind of traffic the controller relays: a page, a
// streamed body (/api/echo hashes it as it arrives), a response that must flush per event (/events),
// and an upgrade (/ws, a WebSocket echo).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import { ConfigError } from '../errors.js';
import { escapeHtml } from '../proxy/error-page.js';

export interface DemoService {
  /** `http://127.0.0.1:PORT`, with the port actually bound. */
  readonly url: string;
  readonly port: number;
  /** Stops listening and ends every connection, WebSockets included. Idempotent. */
  close(): Promise<void>;
}

export interface DemoOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
  /** Time between two /events ticks, default 1000 ms. */
  intervalMs?: number;
}

/** Largest WebSocket message the echo accepts; a bigger one closes the socket with 1009. */
export const DEMO_MAX_WS_PAYLOAD = 1024 * 1024;
/** Ticks /events sends before it ends the response. */
export const DEMO_EVENT_COUNT = 5;
// The echo stops reading from a WebSocket while this much of its output is unsent, so a client that
// sends but never reads costs at most this plus one message.
const WS_HIGH_WATER = 1024 * 1024;

export async function startDemoService(options: DemoOptions = {}): Promise<DemoService> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  const intervalMs = options.intervalMs ?? 1000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError('demo.port', 'must be an integer from 0 to 65535');
  }
  if (!Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > 60_000) {
    throw new ConfigError('demo.intervalMs', 'must be an integer from 1 to 60000');
  }

  const wss = new WebSocketServer({ noServer: true, maxPayload: DEMO_MAX_WS_PAYLOAD });
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => route(req, res, intervalMs));
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    upgrade(wss, req, socket, head),
  );
  wss.on('connection', echo);

  await listen(server, port, host);
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    close() {
      closing ??= shutdown(server, wss, sockets);
      return closing;
    },
  };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

async function shutdown(server: Server, wss: WebSocketServer, sockets: Set<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Upgraded sockets are no longer the HTTP server's, so they are ended here; the rest (idle
  // keep-alive, a running /events) by destroying every socket the server accepted.
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  for (const socket of sockets) socket.destroy();
  await closed;
}

// --- HTTP routes ---

type Handler = (req: IncomingMessage, res: ServerResponse, intervalMs: number) => void;

const ROUTES: ReadonlyMap<string, { methods: readonly string[] | 'any'; handle: Handler }> = new Map([
  ['/', { methods: ['GET', 'HEAD'], handle: indexPage }],
  ['/api/echo', { methods: 'any', handle: echoRequest }],
  ['/events', { methods: ['GET'], handle: events }],
  ['/healthz', { methods: ['GET', 'HEAD'], handle: healthz }],
]);

function route(req: IncomingMessage, res: ServerResponse, intervalMs: number): void {
  const path = pathOf(req.url ?? '');
  const entry = path === undefined ? undefined : ROUTES.get(path);
  if (entry === undefined) return text(res, 404, 'not found\n');
  if (entry.methods !== 'any' && !entry.methods.includes(req.method ?? '')) {
    res.setHeader('Allow', entry.methods.join(', '));
    return text(res, 405, 'method not allowed\n');
  }
  entry.handle(req, res, intervalMs);
}

function pathOf(url: string): string | undefined {
  try {
    return new URL(url, 'http://demo.invalid').pathname;
  } catch {
    return undefined;
  }
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

function healthz(_req: IncomingMessage, res: ServerResponse): void {
  text(res, 200, 'ok');
}

// The body goes through the hash chunk by chunk: a large upload costs one chunk of memory, and the
// digest shows the bytes arrived intact through the tunnel.
function echoRequest(req: IncomingMessage, res: ServerResponse): void {
  const hash = createHash('sha256');
  let bodyBytes = 0;
  req.on('data', (chunk: Buffer) => {
    bodyBytes += chunk.length;
    hash.update(chunk);
  });
  req.once('end', () => {
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      headers: req.rawHeaders,
      bodyBytes,
      sha256: hash.digest('hex'),
    });
    res.writeHead(200, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
    });
    res.end(body);
  });
}

// Each tick is written as it happens, headers first, so a proxy that buffers shows up as a stall.
function events(req: IncomingMessage, res: ServerResponse, intervalMs: number): void {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-store',
  });
  res.flushHeaders();
  let sent = 0;
  const tick = (): void => {
    sent++;
    res.write(`data: tick ${sent}\n\n`);
    if (sent >= DEMO_EVENT_COUNT) {
      clearInterval(timer);
      res.end();
    }
  };
  const timer = setInterval(tick, intervalMs);
  res.once('close', () => clearInterval(timer));
  tick();
}

// --- the page ---

// What the page reports of the request: the headers a proxy in between adds or changes.
const SHOWN_HEADERS = ['X-Forwarded-For', 'X-Forwarded-Proto', 'Via', 'X-Request-Id'] as const;

const PAGE_SCRIPT = `
const form = document.getElementById('send');
const input = document.getElementById('message');
const state = document.getElementById('state');
const log = document.getElementById('log');
const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const socket = new WebSocket(scheme + '//' + location.host + '/ws');
function show(line) {
  const item = document.createElement('li');
  item.textContent = line;
  log.append(item);
  while (log.children.length > 50) log.firstElementChild.remove();
}
socket.onopen = () => { state.textContent = 'connected'; };
socket.onclose = (e) => { state.textContent = 'closed (' + e.code + '), reload to reconnect'; };
// The echo comes back in order, so the oldest send time is the one each echo answers.
const sentAt = [];
socket.onmessage = (e) => {
  const t0 = sentAt.shift();
  const rtt = t0 === undefined ? '' : ' (' + (performance.now() - t0).toFixed(1) + ' ms)';
  show('\\u2190 ' + e.data + rtt);
};
form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (socket.readyState !== WebSocket.OPEN || input.value === '') return;
  sentAt.push(performance.now());
  socket.send(input.value);
  show('\\u2192 ' + input.value);
  input.value = '';
});
`;

// The page runs only its own script (pinned by hash) and connects only to its own host (ws: and wss:
// spelled out for browsers whose 'self' predates CSP 3).
const PAGE_CSP = [
  "default-src 'none'",
  "style-src 'unsafe-inline'",
  `script-src 'sha256-${createHash('sha256').update(PAGE_SCRIPT).digest('base64')}'`,
  "connect-src 'self' ws: wss:",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

function indexPage(req: IncomingMessage, res: ServerResponse): void {
  const rows = [
    ['Host', req.headers.host],
    ...SHOWN_HEADERS.map((name) => [name, req.headers[name.toLowerCase()]]),
  ]
    .map(([name, value]) => `<tr><th>${name}</th><td>${cell(value)}</td></tr>`)
    .join('\n');
  const body = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice demo</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:44rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{text-align:left;padding:.25rem .75rem;border-bottom:1px solid #ddd}
td{font-family:ui-monospace,monospace;word-break:break-all}.none{color:#999}
#log{font-family:ui-monospace,monospace;padding-left:1.25rem}
</style>
</head>
<body>
<h1>Sluice demo</h1>
<p>This page came from the demo service through the tunnel. The request it received:</p>
<table>
${rows}
</table>
<h2>WebSocket echo</h2>
<p>Status: <span id="state">connecting</span></p>
<form id="send"><input id="message" autocomplete="off" placeholder="type a message" maxlength="1000"> <button>Send</button></form>
<ul id="log"></ul>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
  res.writeHead(200, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'Content-Security-Policy': PAGE_CSP,
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(body);
}

function cell(value: string | string[] | undefined): string {
  if (value === undefined) return '<span class="none">(none)</span>';
  return escapeHtml(Array.isArray(value) ? value.join(', ') : value);
}

// --- WebSocket echo ---

function upgrade(wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', ignore); // a reset mid-handshake is the client's business
  if (pathOf(req.url ?? '') !== '/ws' || req.headers.upgrade?.toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
}

function echo(ws: WebSocket): void {
  ws.on('error', ignore); // e.g. a message over maxPayload: ws closes with 1009 and reports it here
  ws.on('message', onMessage);
}

// A module-level listener shared by every socket (`this` is the WebSocket), not a closure per socket.
// Backpressure: reading stops while the echoes pile up unsent, and resumes once half have gone out.
function onMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  this.send(data, { binary: isBinary }, () => {
    if (this.isPaused && this.bufferedAmount <= WS_HIGH_WATER / 2) this.resume();
  });
  if (this.bufferedAmount > WS_HIGH_WATER) this.pause();
}

function ignore(): void {}
