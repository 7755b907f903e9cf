// WebSockets over HTTP/2 (RFC 8441): the client's end of an upgrade when it is an extended CONNECT
// stream (`:method CONNECT`, `:protocol websocket`) rather than an HTTP/1.1 connection. Towards the
// target the request is the HTTP/1.1 upgrade of RFC 6455 §4.1 (the controller made it so, with a key of
// its own, since RFC 8441 has none); here the target's 101 becomes the stream's `:status 200`, and then
// the stream's DATA frames carry the WebSocket's bytes both ways, untouched. A stream's END_STREAM is
// the FIN of the connection it stands for, and RST_STREAM its reset (RFC 9113 §8.5).
import { createHash, randomBytes } from 'node:crypto';
import { constants, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { ResponseHead } from './envelope.js';
import type { UpgradeAnswer, UpgradeClient } from './upgrade.js';

// RFC 6455 §1.3: the GUID the accept value is derived with.
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A fresh Sec-WebSocket-Key (RFC 6455 §4.1: 16 random bytes, base64). */
export function newWebSocketKey(): string {
  return randomBytes(16).toString('base64');
}

/** The Sec-WebSocket-Accept a target must answer `key` with (RFC 6455 §4.2.2). */
export function webSocketAccept(key: string): string {
  return createHash('sha1')
    .update(key + WEBSOCKET_GUID)
    .digest('base64');
}

// Fields of the target's 101 that belong to the HTTP/1.1 handshake alone: the accept value answers the
// key this hop made up, and a 2xx to CONNECT has no content framing (RFC 9110 §9.3.6). Upgrade and
// Connection are gone already, as for any response that is not relayed as a switch.
const HANDSHAKE_ONLY: ReadonlySet<string> = new Set([
  'sec-websocket-accept',
  'content-length',
  'transfer-encoding',
]);

/** An extended CONNECT stream as the client end of an upgrade whose request carried `key`. */
export class Http2WebSocketClient implements UpgradeClient {
  readonly channel: ServerHttp2Stream;
  readonly #key: string;

  constructor(stream: ServerHttp2Stream, key: string) {
    this.channel = stream;
    this.#key = key;
  }

  prepare(): void {
    // The session's socket is already no-delay; a stream has no keepalive of its own.
    this.channel.setTimeout(0);
  }

  idleAfter(ms: number, onIdle: () => void): void {
    this.channel.setTimeout(ms, onIdle);
  }

  answer(head: ResponseHead, headers: string[], switched: boolean): UpgradeAnswer {
    if (switched) {
      const accept = fieldValue(head.headers, 'sec-websocket-accept');
      if (accept !== webSocketAccept(this.#key)) {
        const reason = 'the target answered the WebSocket handshake with a wrong Sec-WebSocket-Accept';
        return { refused: reason, detail: `accept ${accept ?? '(none)'}` };
      }
    } else if (head.status < 300) {
      // A 2xx to an extended CONNECT says the tunnel is open (RFC 8441 §5): the client would speak
      // WebSocket to a target that never switched.
      const reason = `the target answered the WebSocket upgrade with ${head.status}, not 101`;
      return { refused: reason, detail: String(head.status) };
    }
    const status = switched ? 200 : head.status;
    // Upgrade was kept for a 101 (forwardResponseHeaders): HTTP/2 has no such field (RFC 9113 §8.2.2).
    const fields = headerObject(headers, switched);
    try {
      this.channel.respond({ ...fields, ':status': status });
    } catch (err) {
      // Node refuses a field HTTP/2 cannot carry; nothing was sent.
      const reason = 'the target sent a response head that cannot be relayed';
      return { refused: reason, detail: (err as Error).message };
    }
    if (!switched) closeWhenAnswered(this.channel);
    return { status };
  }

  cut(): void {
    // RFC 9113 §8.5: a tunnel's failure is a stream error of type CONNECT_ERROR. Node cannot reset a
    // stream whose writable side is open without an END_STREAM just before the RST_STREAM: a client that
    // half-closes at once on that END_STREAM closes the stream cleanly and misses the reset.
    if (!this.channel.destroyed) this.channel.close(constants.NGHTTP2_CONNECT_ERROR);
  }
}

/**
 * The target's fields as Node's HTTP/2 header object: names lowercased, repeated fields as arrays, and
 * for a switch the handshake's own fields left out.
 */
function headerObject(raw: readonly string[], switched: boolean): OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'upgrade' || name === 'connection') continue;
    if (switched && HANDSHAKE_ONLY.has(name)) continue;
    const value = raw[i + 1]!;
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    else out[name] = [had, value];
  }
  return out;
}

function fieldValue(raw: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

/**
 * A refused upgrade is a complete response: once it is sent, a client still sending (its WebSocket
 * bytes, optimistically) is told to stop with RST_STREAM NO_ERROR (RFC 9113 §8.1), so the stream does
 * not stay half open.
 */
export function closeWhenAnswered(stream: ServerHttp2Stream): void {
  stream.once('finish', () => {
    if (!stream.readableEnded && !stream.destroyed) stream.close(constants.NGHTTP2_NO_ERROR);
  });
}
