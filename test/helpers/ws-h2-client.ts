// Client side of the RFC 8441 tests: a WebSocket over one HTTP/2 stream (`:method CONNECT`,
// `:protocol websocket`), framed by `ws`'s own Sender and Receiver, so that the frames that cross the
// controller are masked client frames (RFC 6455 §5.3) as a browser sends them, and the echo is parsed
// as strictly as `ws` parses any.
import { type ClientHttp2Stream, constants, type IncomingHttpHeaders } from 'node:http2';
import type { Writable } from 'node:stream';
import * as wsModule from 'ws';

interface SendOptions {
  binary: boolean;
  compress: boolean;
  fin: boolean;
  mask: boolean;
}

/** The part of ws's Sender (lib/sender.js) these tests use; @types/ws does not declare it. */
interface Sender {
  send(data: Buffer | string, options: SendOptions, cb?: (err?: Error) => void): void;
  close(code: number, reason: string, mask: boolean, cb?: (err?: Error) => void): void;
  pong(data: Buffer, mask: boolean, cb?: (err?: Error) => void): void;
}

/** ws's Receiver (lib/receiver.js): a Writable that parses frames and emits what they carry. */
interface Receiver {
  write(chunk: Buffer): boolean;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'conclude', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'ping' | 'pong', listener: (data: Buffer) => void): this;
  on(event: 'drain', listener: () => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
}

const { Sender, Receiver } = wsModule as unknown as {
  Sender: new (socket: Writable, extensions: object, generateMask?: unknown) => Sender;
  Receiver: new (options: { binaryType: 'nodebuffer'; isServer: boolean; maxPayload: number }) => Receiver;
};

/** The headers of an RFC 8441 WebSocket request for `path` on `authority`. */
export function connectHeaders(
  authority: string,
  path: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'https',
    ':authority': authority,
    ':path': path,
    'sec-websocket-version': '13',
    ...extra,
  };
}

/** The stream's response head, or its error. */
export function responseOf(stream: ClientHttp2Stream): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
    stream.once('close', () => reject(new Error(`stream closed before a response (RST ${stream.rstCode})`)));
  });
}

export interface Message {
  data: Buffer;
  binary: boolean;
}

/** A WebSocket on a stream whose 200 has come: messages in order, the close frame, the stream's end. */
export class H2WebSocket {
  readonly stream: ClientHttp2Stream;
  /** The peer's close frame: its code (1005 when it had none) and reason. */
  readonly concluded: Promise<{ code: number; reason: string }>;
  /** 'end' when the stream ended (END_STREAM both ways), else 'reset <code>' (RST_STREAM's code). */
  readonly finished: Promise<string>;
  /** Bytes of message payload received so far. */
  received = 0;
  readonly #sender: Sender;
  readonly #queue: Message[] = [];
  #waiting: ((m: Message) => void) | null = null;

  /**
   * `endOnEnd: false` keeps this side open after the peer's END_STREAM, to see an RST_STREAM that follows
   * it: Node's server cannot reset a stream it is still writing without an END_STREAM first.
   */
  constructor(stream: ClientHttp2Stream, options: { endOnEnd?: boolean } = {}) {
    this.stream = stream;
    this.#sender = new Sender(stream, {});
    const receiver = new Receiver({ binaryType: 'nodebuffer', isServer: false, maxPayload: 0 });
    stream.on('error', () => {});
    receiver.on('error', () => stream.close());
    receiver.on('message', (data, binary) => {
      this.received += data.length;
      const waiter = this.#waiting;
      if (waiter !== null) {
        this.#waiting = null;
        waiter({ data, binary });
      } else this.#queue.push({ data, binary });
    });
    receiver.on('ping', (data) => this.#sender.pong(data, true));
    // Backpressure as ws keeps it: a parse that falls behind pauses the stream.
    const onData = (chunk: Buffer): void => {
      if (!receiver.write(chunk)) stream.pause();
    };
    stream.on('data', onData);
    receiver.on('drain', () => stream.resume());
    this.concluded = new Promise((resolve) =>
      receiver.on('conclude', (code, reason) => {
        // The Receiver ends itself after a close frame; whatever follows is read and dropped, as ws does.
        stream.off('data', onData);
        stream.resume();
        resolve({ code, reason: reason.toString() });
      }),
    );
    this.finished = new Promise((resolve) => {
      let ended = false;
      // As ws does on its socket's FIN: the peer is done, so this side ends too (unless told to wait).
      stream.once('end', () => {
        ended = true;
        if (options.endOnEnd !== false) stream.end();
      });
      // Node ends the readable side on RST_STREAM too, so the code decides: a clean close has NO_ERROR.
      stream.once('close', () =>
        resolve(ended && stream.rstCode === constants.NGHTTP2_NO_ERROR ? 'end' : `reset ${stream.rstCode}`),
      );
    });
  }

  send(data: Buffer | string, binary = typeof data !== 'string'): void {
    this.#sender.send(data, { binary, compress: false, fin: true, mask: true });
  }

  close(code: number, reason = ''): void {
    this.#sender.close(code, reason, true);
  }

  /** The next message, in order. */
  next(): Promise<Message> {
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => (this.#waiting = resolve));
  }
}
