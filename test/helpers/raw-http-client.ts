// An HTTP/1.1 client on a raw socket, for framing tests: it writes exactly the bytes a test gives it and
// parses what comes back itself, so a test can pipeline, half-close, send what Node's own client never
// would, and check the answer byte for byte.
import { connect, type Socket } from 'node:net';
import { within } from './wait.js';

export interface RawResponse {
  /** `HTTP/1.1 200 OK`, as sent. */
  readonly statusLine: string;
  readonly status: number;
  /** Names lowercased; a repeated field keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export class RawClient {
  readonly socket: Socket;
  #received = Buffer.alloc(0);
  #ended = false;
  #waiters: (() => void)[] = [];
  /** Resolves when the server has closed its side (FIN or reset) and the socket is gone. */
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#received = Buffer.concat([this.#received, chunk]);
      this.#wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.#ended = true;
        this.#wake();
        resolve();
      }),
    );
  }

  static async open(port: number): Promise<RawClient> {
    const socket = connect(port, '127.0.0.1');
    await within(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      }),
      30_000,
      'the raw connection',
    );
    return new RawClient(socket);
  }

  /** Every byte received so far, as latin1 (one char per byte). */
  get text(): string {
    return this.#received.toString('latin1');
  }

  write(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Waits until `count` whole responses have arrived (1xx ones included) and returns them. */
  async responses(count: number, timeoutMs = 30_000): Promise<RawResponse[]> {
    const deadline = Date.now() + timeoutMs;
    for (let turns = 0; turns < 100_000; turns++) {
      const parsed = parseResponses(this.#received, this.#ended);
      if (parsed.length >= count) return parsed.slice(0, count);
      if (this.#ended) {
        throw new Error(`the connection closed after ${parsed.length} of ${count} responses: ${this.text}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      await within(
        new Promise<void>((resolve) => this.#waiters.push(resolve)),
        left,
        `${count} responses`,
      ).catch(() => {});
    }
    throw new Error(`timed out waiting for ${count} responses; got: ${JSON.stringify(this.text)}`);
  }

  /** Waits until the server closes the connection; returns every response it sent. */
  async untilClosed(timeoutMs = 30_000): Promise<RawResponse[]> {
    await within(
      this.closed,
      timeoutMs,
      `the server to close the connection; got ${JSON.stringify(this.text)}`,
    );
    return parseResponses(this.#received, true);
  }

  destroy(): void {
    this.socket.destroy();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Sends `bytes` on a fresh connection and returns what came back once the server closed it. */
export async function rawExchange(port: number, bytes: string, timeoutMs = 30_000): Promise<RawResponse[]> {
  const client = await RawClient.open(port);
  try {
    client.write(bytes);
    return await client.untilClosed(timeoutMs);
  } finally {
    client.destroy();
  }
}

/**
 * The whole responses in `buf`. A body without Content-Length or chunked framing runs to the end of the
 * connection, so it counts only once `ended`.
 */
export function parseResponses(buf: Buffer, ended: boolean): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  for (let i = 0; i < 10_000; i++) {
    const headEnd = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (headEnd < 0) break;
    const lines = buf.subarray(at, headEnd).toString('latin1').split('\r\n');
    const statusLine = lines[0]!;
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 'NaN');
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const bodyStart = headEnd + 4;
    const body = readBody(buf, bodyStart, status, headers, ended);
    if (body === undefined) break;
    out.push({ statusLine, status, headers, body: body.text });
    at = body.end;
  }
  return out;
}

function readBody(
  buf: Buffer,
  start: number,
  status: number,
  headers: Record<string, string>,
  ended: boolean,
): { text: string; end: number } | undefined {
  if ((status >= 100 && status < 200) || status === 204 || status === 304) return { text: '', end: start };
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
    let at = start;
    let text = '';
    for (let i = 0; i < 100_000; i++) {
      const lineEnd = buf.indexOf('\r\n', at, 'latin1');
      if (lineEnd < 0) return undefined;
      const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
      if (size === 0) {
        const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd, 'latin1');
        return trailerEnd < 0 ? undefined : { text, end: trailerEnd + 4 };
      }
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      text += buf.subarray(lineEnd + 2, lineEnd + 2 + size).toString('latin1');
      at = lineEnd + 2 + size + 2;
    }
    return undefined;
  }
  if (headers['content-length'] !== undefined) {
    const end = start + Number(headers['content-length']);
    return buf.length < end ? undefined : { text: buf.subarray(start, end).toString('latin1'), end };
  }
  return ended ? { text: buf.subarray(start).toString('latin1'), end: buf.length } : undefined;
}
