// The origin every path ends at, in a process of its own:
//   GET /small       13-byte body with a Content-Length
//   GET /bytes?n=N   N bytes (Content-Length), written with backpressure
//   POST /sink       reads and discards the body, answers {"bytes":count}
//   /ws              WebSocket echo (ws), one message back per message
// and on a second port, the raw TCP target of the TCP workloads (tcpTarget below).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { sendReady, serveIpc } from '../common/ipc.js';
import { HOST, SMALL_BODY, TCP_ECHO, TCP_SOURCE } from './common.js';

const CHUNK = Buffer.alloc(256 * 1024, 0x62);
const SMALL = Buffer.from(SMALL_BODY);
const MAX_BYTES = 64 * 1024 ** 3;

const stats = { requests: 0, sunk: 0, sent: 0, wsOpen: 0, wsTotal: 0, errors: 0 };

function small(res: ServerResponse): void {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': SMALL.length });
  res.end(SMALL);
}

/** Writes `n` bytes, pausing on a full socket buffer; stops if the client goes away. */
function bytes(res: ServerResponse, n: number): void {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': n });
  let left = n;
  const pump = (): void => {
    while (left > 0 && !res.destroyed) {
      const size = Math.min(left, CHUNK.length);
      left -= size;
      stats.sent += size;
      if (!res.write(size === CHUNK.length ? CHUNK : CHUNK.subarray(0, size))) {
        res.once('drain', pump);
        return;
      }
    }
    if (left === 0) res.end();
  };
  pump();
}

function sink(req: IncomingMessage, res: ServerResponse): void {
  let count = 0;
  req.on('data', (chunk: Buffer) => {
    count += chunk.length;
  });
  req.on('end', () => {
    stats.sunk += count;
    const body = JSON.stringify({ bytes: count });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  stats.requests += 1;
  const url = new URL(req.url ?? '/', 'http://origin');
  if (req.method === 'GET' && url.pathname === '/small') return small(res);
  if (req.method === 'GET' && url.pathname === '/bytes') {
    const n = Number(url.searchParams.get('n'));
    if (Number.isInteger(n) && n >= 0 && n <= MAX_BYTES) return bytes(res, n);
  }
  if (req.method === 'POST' && url.pathname === '/sink') return sink(req, res);
  res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': 10 });
  res.end('not found\n');
}

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  this.send(data, { binary: isBinary });
}

function onClose(): void {
  stats.wsOpen -= 1;
}

function onSocketError(): void {
  stats.errors += 1;
}

function onWebSocket(ws: WebSocket): void {
  stats.wsOpen += 1;
  stats.wsTotal += 1;
  ws.on('message', onMessage);
  ws.on('close', onClose);
  ws.on('error', onSocketError);
}

// --- the raw TCP target ---

/** Writes `n` bytes with backpressure, then ends (FIN), so that the client times to its last byte. */
function sourceBytes(socket: net.Socket, n: number): void {
  let left = n;
  const pump = (): void => {
    while (left > 0 && !socket.destroyed) {
      const size = Math.min(left, CHUNK.length);
      left -= size;
      stats.sent += size;
      if (!socket.write(size === CHUNK.length ? CHUNK : CHUNK.subarray(0, size))) {
        socket.once('drain', pump);
        return;
      }
    }
    if (left === 0) socket.end();
  };
  pump();
}

/** Waits for the header, then sources or echoes; anything else closes the connection. */
function onTcpConnection(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', onSocketError);
  let head = Buffer.alloc(0);
  const onHead = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    if (head[0] === TCP_ECHO) {
      socket.off('data', onHead);
      if (head.length > 1) socket.write(head.subarray(1));
      socket.pipe(socket);
    } else if (head[0] === TCP_SOURCE && head.length >= 9) {
      socket.off('data', onHead);
      socket.resume();
      sourceBytes(socket, Number(head.readBigUInt64BE(1)));
    } else if (head[0] !== TCP_SOURCE || head.length > 9) {
      socket.destroy();
    }
  };
  socket.on('data', onHead);
}

const tcpTarget = net.createServer(onTcpConnection);

const server = createServer({ requestTimeout: 0 }, onRequest);
server.keepAliveTimeout = 120_000;
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  socket.on('error', onSocketError);
  if (new URL(req.url ?? '/', 'http://origin').pathname !== '/ws') return void socket.destroy();
  wss.handleUpgrade(req, socket, head, onWebSocket);
});
server.on('clientError', (_err, socket) => {
  stats.errors += 1;
  socket.destroy();
});
server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
  tcpTarget.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
    serveIpc({ stats: () => ({ ...stats }) });
    const tcpPort = (tcpTarget.address() as AddressInfo).port;
    sendReady({ port: (server.address() as AddressInfo).port, tcpPort });
  });
});
