// `Upgrade: h2c` (RFC 7540 §3.2) on the public listener is served as the HTTP/1.1 request it also is,
// as nginx does: relayed as an upgrade, a target that speaks h2c would switch the connection to
// HTTP/2, and every later request on it would go straight to that target, past routing, the path
// fence and the request log (h2c smuggling). The server may ignore an Upgrade (RFC 9110 §7.8).
//
// Node's server hands every `Connection: upgrade` request to its 'upgrade' listener with the raw
// socket and has no per-request opt-out in Node 20 (`shouldUpgradeCallback` came later). So the
// request head is written again without its Upgrade, HTTP2-Settings and their Connection tokens, put
// back in front of the bytes that followed it, and the socket is handed to the server as a new
// connection (the documented way to inject one): a fresh parser reads the request, its body and
// anything pipelined behind it, and the request is served like any other.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** Fields that belong to the h2c upgrade alone. */
const H2C_FIELDS: ReadonlySet<string> = new Set(['upgrade', 'http2-settings']);

/** The request asks to upgrade to h2c, alone or among other protocols (RFC 9110 §7.8). */
export function isH2cUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  if (upgrade === undefined) return false;
  return upgrade.split(',').some((p) => p.split('/', 1)[0]!.trim().toLowerCase() === 'h2c');
}

/** Serves an h2c upgrade request on `server` as plain HTTP/1.1, on the same connection. */
export function serveWithoutUpgrade(
  server: Server,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): void {
  socket.unshift(head.length === 0 ? plainHead(req) : Buffer.concat([plainHead(req), head]));
  whenNoResponsePending(socket, () => server.emit('connection', socket));
}

/**
 * Runs `then` once the responses to requests pipelined ahead of this one are written. They belong to
 * the old parser's queue; a response of the new parser would wait behind them for a turn the old
 * queue never gives it. Node keeps the response on the wire as `socket._httpMessage`, as edge.ts
 * also reads. A response that closed the connection ends it: nothing more is read.
 */
function whenNoResponsePending(socket: Duplex, then: () => void): void {
  if (socket.destroyed || !socket.writable) return;
  const pending = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (pending === null || pending === undefined) return then();
  // Node's own 'finish' listener runs first and hands the socket to the next queued response.
  pending.once('finish', () => whenNoResponsePending(socket, then));
  pending.once('close', () => {
    if (!pending.writableFinished) socket.destroy();
  });
}

/**
 * The request head as received (Node has checked it already), minus the upgrade: Upgrade and
 * HTTP2-Settings go, and so do the `upgrade` and `http2-settings` tokens of Connection; other tokens
 * (`close`, `keep-alive`, names of hop-by-hop fields) stay, so the request means what it meant.
 */
export function plainHead(req: IncomingMessage): Buffer {
  const raw = req.rawHeaders;
  let head = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const key = name.toLowerCase();
    if (H2C_FIELDS.has(key)) continue;
    let value = raw[i + 1]!;
    if (key === 'connection') {
      value = value
        .split(',')
        .map((token) => token.trim())
        .filter((token) => token !== '' && !H2C_FIELDS.has(token.toLowerCase()))
        .join(', ');
      if (value === '') continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  // Header values are latin1 strings as Node parsed them; written back byte for byte.
  return Buffer.from(`${head}\r\n`, 'latin1');
}
