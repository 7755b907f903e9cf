// A target for upgrade tests: a `ws` WebSocket echo, a custom `Upgrade: echo/1` byte echo on the plain
// node:http 'upgrade' event, and an upgrade it refuses. Each connection's server side is found by its
// request path, so a test can act on it (ping, close, terminate) and time what it sees.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { listenOnLoopback } from './listen.js';

/** Largest message either end of the echo accepts: room for the 16 MiB test message and its framing. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;

export const REFUSED_BODY = 'upgrades are not allowed here\n';

/** The body of the 426 every plain (not upgrade) request gets. */
export const UPGRADE_REQUIRED = 'upgrade required\n';

export interface WsSide {
  readonly ws: WebSocket;
  readonly req: IncomingMessage;
  /** When the server side saw the connection close (performance.now()), with the close frame's fields. */
  readonly closed: Promise<{ code: number; reason: string; at: number }>;
}

export interface RawSide {
  readonly socket: Socket;
  readonly req: IncomingMessage;
  /** The service read the client's FIN: everything it received (for `/half-close` only). */
  readonly ended: Promise<Buffer>;
  /** When the socket closed (performance.now()), and the error code if it was cut (ECONNRESET). */
  readonly closed: Promise<{ at: number; error: string | undefined }>;
}

export interface UpgradeOrigin {
  readonly port: number;
  readonly url: string;
  readonly server: Server;
  readonly wss: WebSocketServer;
  /** The server side of the WebSocket opened on `path` (resolves when it arrives). */
  ws(path: string): Promise<WsSide>;
  /** The server side of the `echo/1` connection opened on `path`. */
  raw(path: string): Promise<RawSide>;
  /** Upgraded sockets (WebSocket or echo/1) the service holds open right now. */
  openSockets(): number;
  close(): Promise<void>;
}

/**
 * Paths:
 * - `/refuse`: any upgrade gets 403 with REFUSED_BODY.
 * - `Upgrade: echo/1`: 101, then every byte comes back, FIN included. `?greet` sends `hello\n` in the
 *   same write as the 101. `/half-close` sends `bye\n` and its FIN right after the 101, then collects
 *   what the client still sends until the client's FIN.
 * - `Upgrade: websocket`: an echo that keeps text/binary; subprotocol `b` is chosen when offered.
 */
export async function startUpgradeOrigin(): Promise<UpgradeOrigin> {
  const wsSides = new Sides<WsSide>();
  const rawSides = new Sides<RawSide>();
  const open = new Set<Socket>();
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_PAYLOAD,
    perMessageDeflate: true,
    handleProtocols: (protocols) => (protocols.has('b') ? 'b' : (protocols.values().next().value ?? false)),
  });
  const server = createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', 'Content-Length': UPGRADE_REQUIRED.length });
    res.end(UPGRADE_REQUIRED);
  });

  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://origin');
    if (url.pathname === '/refuse') {
      socket.end(
        `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(REFUSED_BODY)}\r\n` +
          `Connection: close\r\n\r\n${REFUSED_BODY}`,
      );
      return;
    }
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    if ((req.headers.upgrade ?? '').toLowerCase() === 'echo/1') {
      rawEcho(req, socket, head, url, rawSides);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) =>
        ws.once('close', (code, reason) =>
          resolve({ code, reason: reason.toString(), at: performance.now() }),
        ),
      );
      ws.on('error', () => {});
      ws.on('message', echo);
      wsSides.add(req.url ?? '/', { ws, req, closed }, closed);
    });
  });

  const port = await listenOnLoopback(server);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    wss,
    ws: (path) => wsSides.get(path),
    raw: (path) => rawSides.get(path),
    openSockets: () => open.size,
    async close() {
      for (const s of open) s.destroy();
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function echo(this: WebSocket, data: RawData, isBinary: boolean): void {
  this.send(data as Buffer, { binary: isBinary });
}

function rawEcho(req: IncomingMessage, socket: Socket, head: Buffer, url: URL, sides: Sides<RawSide>): void {
  socket.setNoDelay(true);
  let error: string | undefined;
  socket.once('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
  const closed = new Promise<{ at: number; error: string | undefined }>((resolve) =>
    socket.once('close', () => resolve({ at: performance.now(), error })),
  );
  const switched = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n';
  if (url.pathname === '/half-close') {
    // The service is done first: its FIN goes out right away, and it keeps reading what the client sends.
    const chunks: Buffer[] = [head];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<Buffer>((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
    socket.end(`${switched}bye\n`);
    sides.add(req.url ?? '/', { socket, req, ended, closed }, closed);
    return;
  }
  socket.write(url.searchParams.has('greet') ? `${switched}hello\n` : switched);
  if (head.length > 0) socket.write(head);
  // pipe() keeps backpressure, and ends the write side when the client's FIN arrives.
  socket.pipe(socket);
  sides.add(req.url ?? '/', { socket, req, ended: new Promise<Buffer>(() => {}), closed }, closed);
}

/** Server sides by request path, for whoever asks (before or after they arrive, until they close). */
class Sides<T> {
  readonly #arrived = new Map<string, T>();
  readonly #waiting = new Map<string, (side: T) => void>();

  add(path: string, side: T, closed: Promise<unknown>): void {
    const waiter = this.#waiting.get(path);
    if (waiter !== undefined) {
      this.#waiting.delete(path);
      waiter(side);
      return;
    }
    this.#arrived.set(path, side);
    void closed.then(() => {
      if (this.#arrived.get(path) === side) this.#arrived.delete(path);
    });
  }

  get(path: string): Promise<T> {
    const side = this.#arrived.get(path);
    if (side !== undefined) {
      this.#arrived.delete(path);
      return Promise.resolve(side);
    }
    return new Promise((resolve) => this.#waiting.set(path, resolve));
  }
}
