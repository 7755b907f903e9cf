// The open metadata of a proxied stream (docs/http-over-streams.md, "Open metadata"). The controller
// builds it; the agent validates it, since a stream's metadata is input from across the tunnel.
//
// Checked by hand rather than with a schema library: this runs once per request on the agent, and a
// schema parse that copies the object cost about 2 us and a tenth of the agent's garbage per request.
// A method and a field name are RFC 9110 tokens (syntax.ts).
import { isIP } from 'node:net';
import { TOKEN } from '../syntax.js';
import { isRawList } from './envelope.js';

// A field value (RFC 9110 §5.5): visible characters, SP, HTAB and obs-text, no other control byte. The
// strings carry bytes as Latin-1 (Node's rawHeaders), so a character above U+00FF is no byte at all;
// Node's client refuses all of these with a throw, and CR or LF would split the request.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// The client's HTTP version as Node reports it; '2.0' comes from an HTTP/2 front end (DESIGN §3). The
// agent speaks HTTP/1.1 to the target whichever it is.
const VERSIONS = new Set(['1.0', '1.1', '2.0']);
// The request-target as sent on the agent's request line: origin-form or `*` (RFC 9112 §3.2). No
// whitespace or control bytes, which would split the request line.
const REQUEST_TARGET = /^(?:\/[!-~]*|\*)$/;
export const META_KEYS: ReadonlySet<string> = new Set([
  'kind',
  'target',
  'serverName',
  'client',
  'requestId',
  'head',
]);
export const HEAD_KEYS: ReadonlySet<string> = new Set(['method', 'path', 'version', 'headers', 'chunked']);
const MAX_HEADER_FIELDS = 10_000;

export interface RequestHead {
  method: string;
  path: string;
  version: string;
  /** Flat raw list after the controller's header processing: name, value, name, value, … */
  headers: string[];
  /**
   * The client's body is chunked (Transfer-Encoding, which is hop-by-hop and so not in `headers`):
   * the agent must frame it as chunked too, or it would reach the target without a length.
   */
  chunked?: boolean;
}

/**
 * Set on an HttpStreamMeta by the controller that opens the stream and reads its response itself: the
 * agent may answer with compact HEAD records (envelope.ts, compact.ts). A symbol, so JSON never carries it: a
 * stream relayed for a fleet peer (whose version this controller does not know) gets JSON heads.
 */
export const COMPACT_HEADS: unique symbol = Symbol('sluice.compactHeads');

/** Whether the opener of a stream with this metadata reads compact HEAD records. */
export function wantsCompactHeads(meta: object): boolean {
  return (meta as { [COMPACT_HEADS]?: true })[COMPACT_HEADS] === true;
}

export interface HttpStreamMeta {
  kind: 'http' | 'upgrade';
  target: string;
  /** For an https:// target: the name for SNI and the certificate check, when not the target's host. */
  serverName?: string;
  client: string;
  requestId: string;
  head: RequestHead;
  /** The opener reads compact HEAD records (compact.ts); never in JSON. */
  [COMPACT_HEADS]?: true;
}

type Result = { ok: true; meta: HttpStreamMeta } | { ok: false; reason: string };

/** The client's and the listener's addresses, for a PROXY protocol v2 header to the target. */
export interface ProxyAddresses {
  clientAddress: string;
  clientPort: number;
  listenAddress: string;
  listenPort: number;
}

/** A TCP route's connection (docs/tcp.md): raw bytes both ways, no head. */
export interface TcpStreamMeta {
  kind: 'tcp';
  /** `tcp://host:port`. */
  target: string;
  client: string;
  requestId: string;
  /** Set when the route asks for a PROXY protocol v2 header in front of the client's bytes. */
  proxyProtocol?: 'v2';
  /** With proxyProtocol: where the connection came from and where it arrived; absent: LOCAL. */
  addresses?: ProxyAddresses;
}

const TCP_META_KEYS = new Set(['kind', 'target', 'client', 'requestId', 'proxyProtocol', 'addresses']);
const ADDRESS_KEYS = new Set(['clientAddress', 'clientPort', 'listenAddress', 'listenPort']);

type TcpResult = { ok: true; meta: TcpStreamMeta } | { ok: false; reason: string };

/** The metadata of a `tcp` stream as a TcpStreamMeta (the same object), or a one-line reason. */
export function parseTcpStreamMeta(meta: unknown): TcpResult {
  if (!isRecord(meta)) return refuse('(root)', 'is not an object');
  const extra = unknownKey(meta, TCP_META_KEYS);
  if (extra !== undefined) return refuse(extra, 'is not a tcp metadata field');
  if (meta.kind !== 'tcp') return refuse('kind', 'must be "tcp"');
  if (!isString(meta.target, 2048) || !meta.target.startsWith('tcp://'))
    return refuse('target', 'must be a tcp:// URL of at most 2048 characters');
  if (!isString(meta.client, 128)) return refuse('client', 'must be a string of at most 128 characters');
  if (!isString(meta.requestId, 200))
    return refuse('requestId', 'must be a string of at most 200 characters');
  if (meta.proxyProtocol !== undefined && meta.proxyProtocol !== 'v2')
    return refuse('proxyProtocol', 'must be "v2"');
  const addresses = meta.addresses;
  if (addresses !== undefined) {
    if (meta.proxyProtocol === undefined) return refuse('addresses', 'is only sent with proxyProtocol');
    if (!isRecord(addresses)) return refuse('addresses', 'is not an object');
    const extraAddress = unknownKey(addresses, ADDRESS_KEYS);
    if (extraAddress !== undefined) return refuse(`addresses.${extraAddress}`, 'is not an address field');
    for (const key of ['clientAddress', 'listenAddress'] as const) {
      if (!isString(addresses[key], 64) || isIP(addresses[key]) === 0)
        return refuse(`addresses.${key}`, 'must be an IP address');
    }
    for (const key of ['clientPort', 'listenPort'] as const) {
      const port = addresses[key];
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)
        return refuse(`addresses.${key}`, 'must be a port number');
    }
  }
  return { ok: true, meta: meta as unknown as TcpStreamMeta };
}

/** The metadata as an HttpStreamMeta (the same object, not a copy), or a one-line reason it is not. */
export function parseStreamMeta(meta: unknown): Result {
  if (!isRecord(meta)) return refuse('(root)', 'is not an object');
  const extra = unknownKey(meta, META_KEYS);
  if (extra !== undefined) return refuse(extra, 'is not a metadata field');
  if (meta.kind !== 'http' && meta.kind !== 'upgrade') return refuse('kind', 'must be "http" or "upgrade"');
  if (!isString(meta.target, 2048)) return refuse('target', 'must be a string of at most 2048 characters');
  if (meta.serverName !== undefined && !isString(meta.serverName, 253))
    return refuse('serverName', 'must be a string of at most 253 characters');
  if (!isString(meta.client, 128)) return refuse('client', 'must be a string of at most 128 characters');
  if (!isString(meta.requestId, 200))
    return refuse('requestId', 'must be a string of at most 200 characters');
  const head = meta.head;
  if (!isRecord(head)) return refuse('head', 'is not an object');
  const extraHead = unknownKey(head, HEAD_KEYS);
  if (extraHead !== undefined) return refuse(`head.${extraHead}`, 'is not a head field');
  if (!isString(head.method, 64) || !TOKEN.test(head.method))
    return refuse('head.method', 'must be a method token');
  if (!isString(head.path, 64 * 1024) || !REQUEST_TARGET.test(head.path)) {
    return refuse('head.path', 'must be an origin-form request target or *');
  }
  if (typeof head.version !== 'string' || !VERSIONS.has(head.version)) {
    return refuse('head.version', 'must be "1.0", "1.1" or "2.0"');
  }
  if (!isRawList(head.headers, MAX_HEADER_FIELDS))
    return refuse('head.headers', 'must hold name, value string pairs');
  const field = badField(head.headers);
  if (field !== undefined) return refuse(`head.headers[${field}]`, field % 2 === 0 ? NAME_RULE : VALUE_RULE);
  if (head.chunked !== undefined && typeof head.chunked !== 'boolean') {
    return refuse('head.chunked', 'must be a boolean');
  }
  return { ok: true, meta: meta as unknown as HttpStreamMeta };
}

const NAME_RULE = 'must be a field name token';
const VALUE_RULE = 'must be a field value: no control byte other than HTAB, no character above U+00FF';

/** The index of the first name that is no token or value that is no field value, if any. */
function badField(raw: readonly string[]): number | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    if (!TOKEN.test(raw[i]!)) return i;
    if (!FIELD_VALUE.test(raw[i + 1]!)) return i + 1;
  }
  return undefined;
}

function refuse(key: string, rule: string): { ok: false; reason: string } {
  return { ok: false, reason: `stream metadata ${key}: ${rule}` };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isString(value: unknown, max: number): value is string {
  return typeof value === 'string' && value.length <= max;
}

/** The first key of `record` that is not in `known`, if any. */
export function unknownKey(record: Record<string, unknown>, known: ReadonlySet<string>): string | undefined {
  for (const key in record) if (!known.has(key)) return key;
  return undefined;
}
