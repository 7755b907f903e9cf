// The server name of a TLS ClientHello, read without terminating TLS (docs/tls.md, "TLS passthrough by
// SNI"). Pure and strict: given every byte a connection has sent so far, it answers that it needs more,
// the name (or that there is none), or that this is no ClientHello. A TLS record may be split across
// packets at any byte and a ClientHello may span several handshake records (RFC 8446 §5.1), so the
// answer depends only on the bytes, never on how they arrived. Re-reading from the first byte each
// time keeps it stateless; the bytes are bounded by MAX_HELLO_BYTES, so that costs little.
import { isHostname } from '../syntax.js';

/** Bytes a connection may send before its ClientHello is whole; past this it is not one we take. */
export const MAX_HELLO_BYTES = 16 * 1024;

// RFC 8446 §5.1 and §4: the record and handshake types, the header sizes, the server_name extension
// (RFC 6066 §3) and its one name type.
const RECORD_HANDSHAKE = 0x16;
const RECORD_HEADER = 5;
const MAX_RECORD_PAYLOAD = 1 << 14;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const HANDSHAKE_HEADER = 4;
const EXTENSION_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST_NAME = 0x00;

export type HelloResult =
  | { readonly kind: 'more' }
  /** A whole ClientHello: its host_name, lowercase, or null when it carries none. */
  | { readonly kind: 'hello'; readonly sni: string | null }
  | { readonly kind: 'invalid'; readonly reason: string };

const MORE: HelloResult = Object.freeze({ kind: 'more' });

/** What `data`, the first bytes of a connection, say about its server name. */
export function parseClientHello(data: Uint8Array): HelloResult {
  const message = handshakeMessage(data);
  if (!(message instanceof Uint8Array)) return message;
  return serverName(message);
}

/**
 * The first handshake message, its fragments joined from successive records: the ClientHello's header
 * and body, once whole.
 */
function handshakeMessage(data: Uint8Array): Uint8Array | HelloResult {
  const fragments: Uint8Array[] = [];
  let have = 0;
  let need = -1; // The message's whole length, once its header is in.
  for (let at = 0; ;) {
    // Garbage is refused at its first byte, not once a whole record header came.
    const problem = recordProblem(data, at);
    if (problem !== undefined) return invalid(problem);
    if (data.length - at < RECORD_HEADER) return needMore(data);
    const length = (data[at + 3]! << 8) | data[at + 4]!;
    const payload = data.subarray(at + RECORD_HEADER, at + RECORD_HEADER + length);
    fragments.push(payload);
    have += payload.length;
    if (need === -1 && have >= HANDSHAKE_HEADER) {
      const header = joined(fragments, HANDSHAKE_HEADER);
      if (header[0] !== HANDSHAKE_CLIENT_HELLO)
        return invalid('the first handshake message is not a ClientHello');
      need = HANDSHAKE_HEADER + ((header[1]! << 16) | (header[2]! << 8) | header[3]!);
      // Each record costs its header too: a message this long cannot arrive within the bound.
      if (need > MAX_HELLO_BYTES - RECORD_HEADER) return invalid('the ClientHello is longer than 16 KiB');
    }
    if (need !== -1 && have >= need) return joined(fragments, need);
    if (payload.length < length) return needMore(data);
    at += RECORD_HEADER + length;
  }
}

/** Why the record at `at` cannot carry a ClientHello, as far as its header is there; or undefined. */
function recordProblem(data: Uint8Array, at: number): string | undefined {
  const have = data.length - at;
  if (have >= 1 && data[at] !== RECORD_HANDSHAKE) {
    return at === 0 ? 'not a TLS handshake record' : 'a non-handshake record interrupts the ClientHello';
  }
  // The record layer's version is 3.x for every TLS version (TLS 1.3 keeps 3.1 there, §5.1).
  if ((have >= 2 && data[at + 1] !== 3) || (have >= 3 && data[at + 2]! > 4))
    return 'not a TLS record version';
  if (have < RECORD_HEADER) return undefined;
  const length = (data[at + 3]! << 8) | data[at + 4]!;
  // §5.1: a handshake record is never empty, and no record carries more than 2^14 bytes of payload.
  if (length === 0) return 'an empty handshake record';
  if (length > MAX_RECORD_PAYLOAD) return 'a record longer than 2^14 bytes';
  return undefined;
}

function needMore(data: Uint8Array): HelloResult {
  return data.length >= MAX_HELLO_BYTES ? invalid('no whole ClientHello within 16 KiB') : MORE;
}

/** The first `n` bytes of the fragments, as one array. */
function joined(fragments: readonly Uint8Array[], n: number): Uint8Array {
  if (fragments[0]!.length >= n) return fragments[0]!.subarray(0, n);
  const out = new Uint8Array(n);
  let at = 0;
  for (const f of fragments) {
    const part = f.subarray(0, n - at);
    out.set(part, at);
    at += part.length;
    if (at === n) break;
  }
  return out;
}

/**
 * The host_name of a whole ClientHello message (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2): each field is
 * checked to end within the message, and the extensions to fill it exactly.
 */
function serverName(message: Uint8Array): HelloResult {
  const r = new Reader(message, HANDSHAKE_HEADER);
  // legacy_version, random.
  if (!r.skip(2 + 32)) return invalid('the ClientHello ends inside its random');
  const session = r.vector(1, 'session id');
  if (typeof session === 'string') return invalid(session);
  if (session.length > 32) return invalid('a session id longer than 32 bytes');
  const suites = r.vector(2, 'cipher suites');
  if (typeof suites === 'string') return invalid(suites);
  if (suites.length === 0 || suites.length % 2 !== 0) return invalid('a malformed cipher suite list');
  const compression = r.vector(1, 'compression methods');
  if (typeof compression === 'string') return invalid(compression);
  if (compression.length === 0) return invalid('no compression method');
  // An old ClientHello may end here, with no extensions and so no name.
  if (r.done) return { kind: 'hello', sni: null };
  const extensions = r.vector(2, 'extensions');
  if (typeof extensions === 'string') return invalid(extensions);
  if (!r.done) return invalid('bytes after the extensions');
  return nameInExtensions(new Reader(extensions, 0));
}

function nameInExtensions(r: Reader): HelloResult {
  const seen = new Set<number>();
  let sni: string | null = null;
  while (!r.done) {
    const type = r.uint16();
    const body = r.vector(2, 'an extension');
    if (type === undefined || typeof body === 'string') return invalid('a truncated extension');
    // §4.2: no extension type appears twice.
    if (seen.has(type)) return invalid(`extension ${type} appears twice`);
    seen.add(type);
    if (type !== EXTENSION_SERVER_NAME) continue;
    const name = hostName(new Reader(body, 0));
    if (name instanceof Refusal) return invalid(name.reason);
    sni = name;
  }
  return { kind: 'hello', sni };
}

class Refusal {
  constructor(readonly reason: string) {}
}

/** The host_name in a server_name extension's body, lowercase; null when the list holds none. */
function hostName(r: Reader): string | null | Refusal {
  const list = r.vector(2, 'the server name list');
  if (typeof list === 'string' || !r.done) return new Refusal('a malformed server_name extension');
  const names = new Reader(list, 0);
  let found: string | null = null;
  while (!names.done) {
    const type = names.uint8();
    const name = names.vector(2, 'a server name');
    if (type === undefined || typeof name === 'string') return new Refusal('a truncated server name');
    // RFC 6066 §3: one name per type; host_name is the only type defined.
    if (type !== NAME_TYPE_HOST_NAME) continue;
    if (found !== null) return new Refusal('two host names');
    // A host_name is ASCII with no trailing dot (RFC 6066 §3); bytes that are no hostname are refused.
    const text = Buffer.from(name).toString('latin1');
    if (!isHostname(text)) return new Refusal('a server name that is not a hostname');
    found = text.toLowerCase();
  }
  return found;
}

/** Reads fields out of `bytes` from `at`; every read checks the bytes are there. */
class Reader {
  readonly #bytes: Uint8Array;
  #at: number;

  constructor(bytes: Uint8Array, at: number) {
    this.#bytes = bytes;
    this.#at = at;
  }

  get done(): boolean {
    return this.#at === this.#bytes.length;
  }

  skip(n: number): boolean {
    if (this.#bytes.length - this.#at < n) return false;
    this.#at += n;
    return true;
  }

  uint8(): number | undefined {
    return this.#at < this.#bytes.length ? this.#bytes[this.#at++] : undefined;
  }

  uint16(): number | undefined {
    if (this.#bytes.length - this.#at < 2) return undefined;
    const value = (this.#bytes[this.#at]! << 8) | this.#bytes[this.#at + 1]!;
    this.#at += 2;
    return value;
  }

  /** A vector with a `lengthBytes`-byte length in front (RFC 8446 §3.4), or why it does not fit. */
  vector(lengthBytes: 1 | 2, what: string): Uint8Array | string {
    const length = lengthBytes === 1 ? this.uint8() : this.uint16();
    if (length === undefined || this.#bytes.length - this.#at < length)
      return `the ClientHello ends inside ${what}`;
    const value = this.#bytes.subarray(this.#at, this.#at + length);
    this.#at += length;
    return value;
  }
}

function invalid(reason: string): HelloResult {
  return { kind: 'invalid', reason };
}
