// A raw HTTP/1.1 client connection for framing tests: it writes whatever bytes it is given and parses
// the responses that come back, one by one, without the leniency or the retries of an HTTP library. So
// a test sees exactly what a server answered on one connection, and whether it closed it.
import { connect, type Socket } from 'node:net';
import { within } from './wait.js';

export interface RawResponse {
  status: number;
  /** Header names lowercase; a repeated header keeps its last value. */
  headers: Record<string, string>;
  body: Buffer;
}

const MAX_HEAD = 64 * 1024;

export class RawHttpConnection {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | null = null;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#notify();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
    // A reset shows up as the close above; the test reads what arrived before it.
    socket.on('error', () => {});
  }

  static async open(port: number, host = '127.0.0.1'): Promise<RawHttpConnection> {
    const socket = connect(port, host);
    await within(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      }),
      30_000,
      `a connection to ${host}:${port}`,
    );
    return new RawHttpConnection(socket);
  }

  /** True once the server closed the connection (or it failed). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Writes bytes; false when the connection is already gone. */
  write(data: string | Buffer): boolean {
    if (this.#closed || this.socket.destroyed) return false;
    this.socket.write(data);
    return true;
  }

  /**
   * The next whole response, or null when the connection closed before one arrived. Bodies framed by
   * Content-Length and chunked bodies are read; a response with neither runs to the close. `head`: the
   * request was a HEAD, so the response has no body whatever its headers say.
   */
  async next(options: { timeoutMs?: number; head?: boolean } = {}): Promise<RawResponse | null> {
    return within(this.#read(options.head === true), options.timeoutMs ?? 30_000, 'an HTTP response');
  }

  /** Resolves once the server has closed the connection. */
  async whenClosed(timeoutMs = 30_000): Promise<void> {
    await within(
      this.#until(() => this.#closed),
      timeoutMs,
      'the server to close the connection',
    );
  }

  close(): void {
    this.socket.destroy();
  }

  async #read(head: boolean): Promise<RawResponse | null> {
    await this.#until(() => this.#buffer.includes('\r\n\r\n') || this.#closed);
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end === -1) {
      if (this.#buffer.length > MAX_HEAD) throw new Error('response head too large');
      return null;
    }
    const [statusLine, ...lines] = this.#buffer.subarray(0, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine!);
    if (match === null) throw new Error(`not an HTTP status line: ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    this.#buffer = this.#buffer.subarray(end + 4);
    const status = Number(match[1]);
    let body: Buffer;
    if (head) body = Buffer.alloc(0);
    else if (headers['transfer-encoding']?.toLowerCase() === 'chunked') body = await this.#chunked();
    else if (headers['content-length'] !== undefined)
      body = await this.#take(Number(headers['content-length']));
    else if (status === 204 || status === 304 || (status >= 100 && status < 200)) body = Buffer.alloc(0);
    else {
      await this.#until(() => this.#closed);
      body = this.#buffer;
      this.#buffer = Buffer.alloc(0);
    }
    return { status, headers, body };
  }

  async #take(length: number): Promise<Buffer> {
    await this.#until(() => this.#buffer.length >= length || this.#closed);
    if (this.#buffer.length < length)
      throw new Error(`the body ended after ${this.#buffer.length} of ${length} bytes`);
    const body = this.#buffer.subarray(0, length);
    this.#buffer = this.#buffer.subarray(length);
    return body;
  }

  async #chunked(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (let i = 0; i < 100_000; i++) {
      await this.#until(() => this.#buffer.includes('\r\n') || this.#closed);
      const eol = this.#buffer.indexOf('\r\n');
      if (eol === -1) throw new Error('a chunked body ended early');
      const size = Number.parseInt(this.#buffer.subarray(0, eol).toString('latin1'), 16);
      this.#buffer = this.#buffer.subarray(eol + 2);
      if (size === 0) {
        // No trailers are expected: just the final CRLF.
        await this.#take(2);
        return Buffer.concat(parts);
      }
      parts.push(await this.#take(size));
      await this.#take(2);
    }
    throw new Error('too many chunks');
  }

  async #until(check: () => boolean): Promise<void> {
    while (!check()) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/** Bytes of one request: a request line, `headers` as given (in order), and the body when there is one. */
export function rawRequest(
  method: string,
  path: string,
  headers: readonly [string, string][],
  body: string | Buffer = '',
): Buffer {
  const head = [`${method} ${path} HTTP/1.1`, ...headers.map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
  return Buffer.concat([Buffer.from(head, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body)]);
}
