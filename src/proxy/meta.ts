// The open metadata of a proxied stream (docs/http-over-streams.md, "Open metadata"). The controller
// builds it; the agent validates it, since a stream's metadata is input from across the tunnel.
//
// Checked by hand rather than with a schema library: this runs once per request on the agent, and a
// schema parse that copies the object cost about 2 us and a tenth of the agent's garbage per request.
// A method and a field name are RFC 9110 tokens (syntax.ts).
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
const META_KEYS = new Set(['kind', 'target', 'serverName', 'client', 'requestId', 'head']);
const HEAD_KEYS = new Set(['method', 'path', 'version', 'headers', 'chunked']);
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

export interface HttpStreamMeta {
  kind: 'http' | 'upgrade';
  target: string;
  /** For an https:// target: the name for SNI and the certificate check, when not the target's host. */
  serverName?: string;
  client: string;
  requestId: string;
  head: RequestHead;
}

type Result = { ok: true; meta: HttpStreamMeta } | { ok: false; reason: string };

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

function refuse(key: string, rule: string): Result {
  return { ok: false, reason: `stream metadata ${key}: ${rule}` };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isString(value: unknown, max: number): value is string {
  return typeof value === 'string' && value.length <= max;
}

function unknownKey(record: Record<string, unknown>, known: ReadonlySet<string>): string | undefined {
  for (const key in record) if (!known.has(key)) return key;
  return undefined;
}
