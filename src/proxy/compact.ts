// The compact open metadata of docs/http-over-streams.md ("Compact forms"): an `http` or `upgrade`
// stream's SYN payload as a table of string lengths and the strings' UTF-8, not JSON. JSON.stringify
// on the controller and JSON.parse on the agent were about a tenth of each side's CPU per small
// request (bench/README.md). A session uses it only when both ends offered COMPACT_CAP, and the
// tunnel treats the payload as opaque: this module is the session's SynCodec.
//
//   0x01  kind (1 http, 2 upgrade)  flags  n:u16  len:u16 × n  UTF-8 of the n strings, end to end
//
// The strings are target, client, requestId, method, path, version, serverName when flagged, then the
// header list. Lengths count UTF-16 code units, so the decoder slices one decoded string and never
// looks for a separator: every byte of every value is carried as it is, a NUL included.
import { ProtocolError } from '../errors.js';
import type { SynCodec } from '../tunnel/session.js';
import type { StreamMeta } from '../tunnel/stream.js';
import { COMPACT_HEADS, HEAD_KEYS, type HttpStreamMeta, META_KEYS, unknownKey } from './meta.js';

/** The HELLO and WELCOME capability: compact SYN metadata, and compact HEAD records when asked. */
export const COMPACT_CAP = 'compact=1';

export const COMPACT_SYN_FORMAT = 0x01;

const KIND_HTTP = 1;
const KIND_UPGRADE = 2;
const FLAG_CHUNKED = 0x1;
const FLAG_COMPACT_HEADS = 0x2;
const FLAG_SERVER_NAME = 0x4;
const KNOWN_FLAGS = FLAG_CHUNKED | FLAG_COMPACT_HEADS | FLAG_SERVER_NAME;
const FIXED = 5;
/** target, client, requestId, method, path, version. */
const LEADING = 6;
const MAX_U16 = 0xffff;

/**
 * The compact payload of `meta`, or null for what it does not cover (any other kind, a key or a type
 * it does not write, a string or a list too long for its 16-bit length): that one goes as JSON.
 */
export function encodeCompactMeta(meta: StreamMeta): Buffer | null {
  const kind = meta.kind === 'http' ? KIND_HTTP : meta.kind === 'upgrade' ? KIND_UPGRADE : 0;
  if (kind === 0) return null;
  if (!compactShape(meta)) return null;
  const m = meta as unknown as HttpStreamMeta;
  const head = m.head;
  const serverName = m.serverName;
  const leading =
    serverName === undefined
      ? [m.target, m.client, m.requestId, head.method, head.path, head.version]
      : [m.target, m.client, m.requestId, head.method, head.path, head.version, serverName];
  const headers = head.headers;
  const n = leading.length + headers.length;
  if (n > MAX_U16) return null;
  const table = FIXED + 2 * n;
  const text = leading.join('') + headers.join('');
  const buf = Buffer.allocUnsafe(table + Buffer.byteLength(text, 'utf8'));
  buf[0] = COMPACT_SYN_FORMAT;
  buf[1] = kind;
  buf[2] =
    (head.chunked === true ? FLAG_CHUNKED : 0) |
    (m[COMPACT_HEADS] === true ? FLAG_COMPACT_HEADS : 0) |
    (serverName === undefined ? 0 : FLAG_SERVER_NAME);
  buf[3] = n >>> 8;
  buf[4] = n & 0xff;
  let off = FIXED;
  for (const list of [leading, headers]) {
    for (let i = 0; i < list.length; i++) {
      const item: unknown = list[i];
      if (typeof item !== 'string' || item.length > MAX_U16) return null;
      const len = item.length;
      buf[off] = len >>> 8;
      buf[off + 1] = len & 0xff;
      off += 2;
    }
  }
  buf.write(text, table, 'utf8');
  return buf;
}

/**
 * Whether the form holds `meta` exactly: the known keys only, strings where it writes strings, and
 * `chunked` a boolean. Anything else (metadata a fleet peer relayed from another version, say) goes
 * as JSON, for the agent to judge as before, rather than losing a field or writing a wrong table.
 */
function compactShape(meta: StreamMeta): boolean {
  if (unknownKey(meta, META_KEYS) !== undefined) return false;
  const head = meta.head as Record<string, unknown> | null | undefined;
  if (typeof head !== 'object' || head === null || unknownKey(head, HEAD_KEYS) !== undefined) return false;
  return (
    typeof meta.target === 'string' &&
    typeof meta.client === 'string' &&
    typeof meta.requestId === 'string' &&
    (meta.serverName === undefined || typeof meta.serverName === 'string') &&
    typeof head.method === 'string' &&
    typeof head.path === 'string' &&
    typeof head.version === 'string' &&
    Array.isArray(head.headers) &&
    (head.chunked === undefined || typeof head.chunked === 'boolean')
  );
}

/**
 * The metadata object of a compact payload, for parseStreamMeta to check as it checks JSON's. Throws
 * a ProtocolError for a payload that breaks the layout; what the strings say is parseStreamMeta's.
 */
export function decodeCompactMeta(payload: Buffer): StreamMeta {
  if (payload.length < FIXED) throw new ProtocolError('compact SYN payload shorter than its header');
  if (payload[0] !== COMPACT_SYN_FORMAT)
    throw new ProtocolError(`SYN payload of unknown format ${payload[0]}`);
  const kind = payload[1];
  if (kind !== KIND_HTTP && kind !== KIND_UPGRADE) {
    throw new ProtocolError(`compact SYN payload with unknown kind ${kind}`);
  }
  const flags = payload[2]!;
  if ((flags & ~KNOWN_FLAGS) !== 0)
    throw new ProtocolError(`compact SYN payload with unknown flags ${flags}`);
  const n = (payload[3]! << 8) | payload[4]!;
  const leading = LEADING + ((flags & FLAG_SERVER_NAME) === 0 ? 0 : 1);
  const table = FIXED + 2 * n;
  if (n < leading || table > payload.length) {
    throw new ProtocolError(`compact SYN payload with ${n} strings in ${payload.length} bytes`);
  }
  const text = payload.toString('utf8', table);
  const parts = new Array<string>(n);
  let at = 0;
  for (let i = 0, off = FIXED; i < n; i++, off += 2) {
    const end = at + ((payload[off]! << 8) | payload[off + 1]!);
    if (end > text.length) break;
    parts[i] = text.slice(at, end);
    at = end;
  }
  // A length past the end, or bytes left over (invalid UTF-8 decodes to other lengths): not the table.
  if (at !== text.length || parts[n - 1] === undefined) {
    throw new ProtocolError('compact SYN payload whose lengths do not match its strings');
  }
  const head: Record<string, unknown> = {
    method: parts[3],
    path: parts[4],
    version: parts[5],
    headers: parts.slice(leading),
  };
  if ((flags & FLAG_CHUNKED) !== 0) head.chunked = true;
  const meta: Record<string | symbol, unknown> = {
    kind: kind === KIND_HTTP ? 'http' : 'upgrade',
    target: parts[0],
    client: parts[1],
    requestId: parts[2],
    head,
  };
  if ((flags & FLAG_SERVER_NAME) !== 0) meta.serverName = parts[6];
  if ((flags & FLAG_COMPACT_HEADS) !== 0) meta[COMPACT_HEADS] = true;
  return meta as StreamMeta;
}

export const compactSynCodec: SynCodec = {
  cap: COMPACT_CAP,
  encode: encodeCompactMeta,
  decode: decodeCompactMeta,
};
