// WebSocket transport (ws:// and wss://), for paths that pass only HTTP. Tunnel frames ride in binary
// messages whose boundaries mean nothing (docs/protocol.md §1), so the adapter is a plain byte stream.
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { SluiceError } from '../errors.js';
import { configureSocket, type PendingDial } from './common.js';
import type { ClientTlsOptions, ServerTlsOptions } from './tls.js';
import { formatTransportUrl, type TransportTarget } from './url.js';

/**
 * The largest message either side sends or accepts. Frames may span messages (docs/protocol.md §1), so
 * this bounds what one connection can make the other buffer, before the handshake as after it.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

// Room for one whole 64 KiB DATA frame and its header, so that a single frame does not already signal
// backpressure; the readable side holds a few frames before it pauses the socket.
const WRITABLE_HIGH_WATER_MARK = 128 * 1024;
const READABLE_HIGH_WATER_MARK = 256 * 1024;

// Close codes that end the readable like a TCP FIN: normal (1000), going away (1001), a close frame
// without a status (1005), and a connection dropped without a close frame (1006). ws reports any loss of
// the socket as 1006, so treating it as an error would make a peer's socket.destroy() an error here but
// a clean end over TCP; the tunnel session tells an expected end from an unexpected one itself.
const END_CODES = new Set([1000, 1001, 1005, 1006]);

const SEND_BINARY = { binary: true, compress: false } as const;

const kDuplex = Symbol('sluice.webSocketDuplex');
type AdaptedWebSocket = WebSocket & { [kDuplex]: WebSocketDuplex };

function duplexOf(ws: WebSocket): WebSocketDuplex {
  return (ws as AdaptedWebSocket)[kDuplex];
}

/**
 * A byte stream over one WebSocket. One write (or one corked batch) becomes one binary message. A
 * WebSocket cannot be half-open: end() sends a close frame, and the peer's close ends the readable.
 */
export class WebSocketDuplex extends Duplex {
  readonly #ws: WebSocket;

  constructor(ws: WebSocket) {
    super({
      allowHalfOpen: false,
      readableHighWaterMark: READABLE_HIGH_WATER_MARK,
      writableHighWaterMark: WRITABLE_HIGH_WATER_MARK,
    });
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    (ws as AdaptedWebSocket)[kDuplex] = this;
    // Named module-level listeners, not closures: nothing per connection but the tag above.
    ws.on('message', wsOnMessage);
    ws.on('close', wsOnClose);
    ws.on('error', wsOnError);
  }

  override _read(): void {
    if (this.#ws.isPaused) this.#ws.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#send(chunk, callback);
  }

  // The session corks and writes a frame header and its payload in one tick; sending them as one
  // message saves a WebSocket header and a socket write per frame.
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (err?: Error | null) => void,
  ): void {
    this.#send(Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#ws.terminate();
    callback(err);
  }

  #send(data: Buffer, callback: (err?: Error | null) => void): void {
    // After the peer's close frame ws is CLOSING and refuses sends; the readable ends on 'close', as a
    // TCP FIN would, so late output (a ping, a WINDOW_UPDATE) is dropped rather than turned into an error.
    if (this.#ws.readyState !== WebSocket.OPEN) return callback();
    // The peer refuses a message above MAX_MESSAGE_BYTES (close 1009): a large batch goes in pieces.
    let offset = 0;
    for (; data.length - offset > MAX_MESSAGE_BYTES; offset += MAX_MESSAGE_BYTES) {
      this.#ws.send(data.subarray(offset, offset + MAX_MESSAGE_BYTES), SEND_BINARY);
    }
    this.#ws.send(offset === 0 ? data : data.subarray(offset), SEND_BINARY, callback);
  }
}

function wsOnMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const duplex = duplexOf(this);
  if (duplex.destroyed) return;
  if (!isBinary) {
    const err = new SluiceError(
      'SLUICE_ERR_PROTOCOL',
      'received a text WebSocket message; tunnels send binary only',
    );
    duplex.destroy(err);
    return;
  }
  // Same shape as ws's own socket handling: stop reading the socket until _read asks for more.
  if (!duplex.push(data as Buffer)) this.pause();
}

function wsOnClose(this: WebSocket, code: number, reason: Buffer): void {
  const duplex = duplexOf(this);
  if (duplex.destroyed) return;
  if (END_CODES.has(code)) {
    duplex.push(null);
    return;
  }
  const why = reason.length > 0 ? ` (${reason.toString()})` : '';
  const err = new SluiceError('SLUICE_ERR_TRANSPORT_CLOSED', `WebSocket closed with code ${code}${why}`);
  duplex.destroy(err);
}

function wsOnError(this: WebSocket, err: Error): void {
  const duplex = duplexOf(this);
  if (!duplex.destroyed) duplex.destroy(err);
}

export function dialWebSocket(target: TransportTarget, tls: ClientTlsOptions | undefined): PendingDial {
  const ws = new WebSocket(formatTransportUrl(target), {
    perMessageDeflate: false,
    maxPayload: MAX_MESSAGE_BYTES,
    ...(tls === undefined ? {} : { ca: tls.ca, servername: tls.servername, rejectUnauthorized: true }),
  });
  const connected = new Promise<Duplex>((resolve, reject) => {
    // `on`, not `once`: the listener must outlive cancel(), which makes ws emit an error.
    ws.on('error', reject);
    ws.once('upgrade', (response: IncomingMessage) => configureSocket(response.socket));
    ws.once('open', () => {
      ws.off('error', reject);
      resolve(new WebSocketDuplex(ws));
    });
  });
  return { connected, cancel: () => ws.terminate() };
}

export function createWebSocketServer(
  target: TransportTarget,
  tls: ServerTlsOptions | undefined,
  accept: (transport: WebSocketDuplex, socket: Socket) => void,
): Server {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_MESSAGE_BYTES,
  });
  const server = tls === undefined ? createHttpServer() : createHttpsServer(tls);
  // As for tls://: a client that rejects our certificate is its own problem, not the listener's.
  server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());
  server.on('request', (req, res) => {
    const status = pathOf(req) === target.path ? 426 : 404;
    res.writeHead(status, { connection: 'close', upgrade: 'websocket' }).end();
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    if (pathOf(req) !== target.path) return refuseUpgrade(socket);
    wss.handleUpgrade(req, socket, head, (ws) => accept(new WebSocketDuplex(ws), socket));
  });
  return server;
}

function pathOf(req: IncomingMessage): string {
  return (req.url ?? '').split('?', 1)[0] ?? '';
}

function refuseUpgrade(socket: Socket): void {
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
}
