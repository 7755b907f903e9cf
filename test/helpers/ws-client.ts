// Client side of upgrade tests: `ws` clients and raw `Upgrade:` sockets aimed at the controller's public
// port with a route's Host, and bounded waits on what they see.
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { type ClientOptions, WebSocket } from 'ws';
import { MAX_PAYLOAD } from './upgrade-origin.js';
import { EVENT_MS, within } from './wait.js';

export interface Dial {
  port: number;
  host: string;
}

/**
 * A WebSocket to 127.0.0.1:port with the route's Host. Compression is off unless asked for, so that
 * what crosses the tunnel is the payload as sent.
 */
export function wsConnect(
  dial: Dial,
  path: string,
  options: ClientOptions & { protocols?: string[] } = {},
): WebSocket {
  const { protocols, headers, ...rest } = options;
  return new WebSocket(`ws://127.0.0.1:${dial.port}${path}`, protocols ?? [], {
    perMessageDeflate: false,
    maxPayload: MAX_PAYLOAD,
    ...rest,
    headers: { host: dial.host, ...headers },
  });
}

/** Resolves with the 101 response once the socket is open; a refused handshake is an error. */
export function wsOpened(ws: WebSocket, timeoutMs = EVENT_MS): Promise<IncomingMessage> {
  return within(
    new Promise<IncomingMessage>((resolve, reject) => {
      let upgrade: IncomingMessage | undefined;
      ws.once('upgrade', (res) => (upgrade = res));
      ws.once('open', () => resolve(upgrade!));
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        reject(new Error(`handshake answered ${res.statusCode}`));
      });
    }),
    timeoutMs,
    'the WebSocket to open',
  );
}

/** A refused handshake's response: status, headers and the whole body. */
export function wsRefused(
  ws: WebSocket,
  timeoutMs = EVENT_MS,
): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return within(
    new Promise((resolve, reject) => {
      ws.once('open', () => reject(new Error('the handshake succeeded')));
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.once('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
          req.destroy();
        });
      });
    }),
    timeoutMs,
    'the refused handshake',
  );
}

export async function wsNext(
  ws: WebSocket,
  timeoutMs = EVENT_MS,
): Promise<{ data: Buffer; isBinary: boolean }> {
  const [data, isBinary] = (await within(once(ws, 'message'), timeoutMs, 'a message')) as [Buffer, boolean];
  return { data, isBinary };
}

/** Sends `data` and resolves with the echo. */
export async function wsEcho(
  ws: WebSocket,
  data: string | Buffer,
  timeoutMs = EVENT_MS,
): Promise<{ data: Buffer; isBinary: boolean }> {
  const next = wsNext(ws, timeoutMs);
  ws.send(data, { binary: typeof data !== 'string' });
  return next;
}

/** The client's close event: code, reason and when it came (performance.now()). */
export function wsClosed(ws: WebSocket): Promise<{ code: number; reason: string; at: number }> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.reject(new Error('already closed'));
  return new Promise((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), at: performance.now() })),
  );
}

export interface RawUpgrade {
  socket: Socket;
  status: number;
  /** The response head, status line and headers, as text. */
  head: string;
  headers: Map<string, string>;
  /** Bytes that came behind the head in the same reads. */
  after: Buffer;
}

/** The header lines an `echo/1` upgrade request carries after Host. */
export const ECHO_UPGRADE = 'Connection: Upgrade\r\nUpgrade: echo/1\r\n';

/**
 * Opens a TCP connection, writes the request head and `early` in one write (so the early bytes are in
 * the same packet as the head), and reads the response head. The socket is left paused, with
 * `allowHalfOpen` so the test decides when its own side ends.
 */
export async function rawUpgrade(
  dial: Dial,
  path: string,
  early: Buffer = Buffer.alloc(0),
  headers = ECHO_UPGRADE,
  timeoutMs = EVENT_MS,
): Promise<RawUpgrade> {
  const socket = netConnect({ host: '127.0.0.1', port: dial.port, allowHalfOpen: true });
  socket.setNoDelay(true);
  await within(once(socket, 'connect'), timeoutMs, 'the TCP connection');
  return rawRequest(socket, dial, path, early, headers, timeoutMs);
}

/** Writes one request (head lines after Host, then `early`) on `socket` and reads the response head. */
export function rawRequest(
  socket: Socket,
  dial: Dial,
  path: string,
  early: Buffer = Buffer.alloc(0),
  headers = ECHO_UPGRADE,
  timeoutMs = EVENT_MS,
): Promise<RawUpgrade> {
  const head = `GET ${path} HTTP/1.1\r\nHost: ${dial.host}\r\n${headers}\r\n`;
  socket.write(Buffer.concat([Buffer.from(head, 'latin1'), early]));
  return within(
    new Promise<RawUpgrade>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        got = Buffer.concat([got, chunk]);
        const end = got.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.pause();
        socket.off('data', onData);
        socket.off('error', reject);
        socket.off('end', onEnd);
        const text = got.subarray(0, end).toString('latin1');
        const [statusLine, ...lines] = text.split('\r\n');
        const fields = new Map<string, string>();
        for (const line of lines) {
          const colon = line.indexOf(':');
          fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0);
        resolve({ socket, status, head: text, headers: fields, after: got.subarray(end + 4) });
      };
      const onEnd = (): void => reject(new Error(`connection ended before a response head: ${got}`));
      socket.on('data', onData);
      socket.once('error', reject);
      socket.once('end', onEnd);
      socket.resume();
    }),
    timeoutMs,
    'the response head',
  );
}
