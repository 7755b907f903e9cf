// An origin server for end-to-end tests: each path shows one behaviour a target can have, so a test can
// check what came through the tunnel byte for byte.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { readAll, writePattern } from './data.js';
import { listenOnLoopback } from './listen.js';

export interface Origin {
  readonly port: number;
  readonly url: string;
  readonly server: Server;
  /**
   * Requests that were cut, by request id: the client stopped sending the body mid-way, or the
   * connection closed before the response was finished (a proxy giving up on a hanging request).
   */
  readonly aborted: Set<string>;
  /** The request ids of every request that arrived (its head, at least). */
  readonly requested: ReadonlySet<string>;
  /** Resolves the next time a request with this id is aborted. */
  whenAborted(requestId: string): Promise<void>;
  /** Resolves once a request with this id has arrived (its head, at least). */
  whenRequested(requestId: string): Promise<void>;
  /** Releases the `/sse` responses waiting after their first event. */
  releaseSse(): void;
  close(): Promise<void>;
}

/** `name` comes back on every response as X-Origin, so a test can tell which target answered. */
export async function startOrigin(name = 'origin'): Promise<Origin> {
  const aborted = new Set<string>();
  const abortWaiters = new Map<string, () => void>();
  const requested = new Set<string>();
  const requestWaiters = new Map<string, () => void>();
  let release: () => void = () => {};
  let released = new Promise<void>((resolve) => (release = resolve));
  const sockets = new Set<Socket>();

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://origin');
    res.setHeader('X-Origin', name);
    const id = String(req.headers['x-request-id'] ?? '');
    requested.add(id);
    requestWaiters.get(id)?.();
    let cut = false;
    const abort = (): void => {
      if (cut) return;
      cut = true;
      aborted.add(id);
      abortWaiters.get(id)?.();
    };
    req.once('close', () => {
      if (!req.complete) abort();
    });
    // A bodyless request is complete as soon as its head is read: a hang that the client gives up on
    // shows as a response closed unfinished.
    res.once('close', () => {
      if (!res.writableFinished) abort();
    });
    switch (url.pathname) {
      case '/headers':
        return json(res, {
          method: req.method,
          url: req.url,
          rawHeaders: req.rawHeaders,
          version: req.httpVersion,
        });
      case '/hash':
        return void readAll(req).then((h) =>
          json(res, { ...h, trailers: req.rawTrailers, chunked: req.headers['transfer-encoding'] ?? null }),
        );
      case '/echo':
        res.writeHead(200, { 'Content-Type': req.headers['content-type'] ?? 'application/octet-stream' });
        req.pipe(res);
        return;
      case '/download': {
        const bytes = Number(url.searchParams.get('bytes') ?? '0');
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', Trailer: 'X-Sha256' });
        void writePattern(res, bytes, 64 * 1024, false).then((sha) => {
          res.addTrailers({ 'X-Sha256': sha });
          res.end();
        });
        return;
      }
      case '/sse':
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
        res.write('data: first\n\n');
        void released.then(() => res.end('data: last\n\n'));
        return;
      case '/status': {
        const code = Number(url.searchParams.get('code') ?? '200');
        res.writeHead(code, { 'Content-Type': 'text/plain', 'X-Status': String(code) });
        res.end(code === 204 || code === 304 ? undefined : 'body');
        return;
      }
      case '/length':
        // A HEAD answered like a GET: Content-Length of the body that would come.
        res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '11' });
        res.end(req.method === 'HEAD' ? undefined : 'hello world');
        return;
      case '/trailers':
        res.writeHead(200, { 'Content-Type': 'text/plain', Trailer: 'X-Checksum, X-Count' });
        res.write('part one,');
        res.write('part two');
        res.addTrailers([
          ['X-Checksum', 'abc123'],
          ['X-Count', '2'],
        ]);
        res.end();
        return;
      case '/continue':
        // Reached only after the 100 was sent (checkContinue below), then reads the body.
        return void readAll(req).then((h) => json(res, h));
      case '/early-hints':
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        res.end('after hints');
        return;
      case '/hang':
        return; // never answers
      case '/cut': {
        // Head and part of the body, then the connection dies. `?chunked` sends no Content-Length,
        // so only the framing can tell the client that the body is short.
        const length = url.searchParams.has('chunked') ? {} : { 'Content-Length': '1000' };
        res.writeHead(200, { 'Content-Type': 'text/plain', ...length });
        res.write('x'.repeat(100), () => req.socket.destroy());
        return;
      }
      case '/slow-upload':
        // Reads the body forever; the test aborts the client.
        req.resume();
        return;
      default:
        res.writeHead(404).end('origin: not found');
    }
  };

  const server = createServer(handle);
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/continue-refused') {
      res.writeHead(417, { 'Content-Type': 'text/plain' });
      res.end('no thanks');
      return;
    }
    res.writeContinue();
    handle(req, res);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const port = await listenOnLoopback(server);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    aborted,
    requested,
    whenAborted(requestId) {
      if (aborted.has(requestId)) return Promise.resolve();
      return new Promise((resolve) => abortWaiters.set(requestId, resolve));
    },
    whenRequested(requestId) {
      if (requested.has(requestId)) return Promise.resolve();
      return new Promise((resolve) => requestWaiters.set(requestId, resolve));
    },
    releaseSse() {
      release();
      released = new Promise<void>((resolve) => (release = resolve));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res: ServerResponse, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
