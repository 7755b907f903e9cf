// Header rewriting at the proxy edge: what the controller forwards towards the target and what it hands
// back to the client. Headers travel as Node's raw list (`IncomingMessage.rawHeaders`: name, value, name,
// value, ...) so that order, case and repeated fields survive. Pure: no I/O, no sockets.
//
// RFC references: RFC 9110 (HTTP Semantics), RFC 9112 (HTTP/1.1), RFC 7239 (Forwarded).
import { isIP } from 'node:net';

/** What the controller knows about the client's request, for the headers this hop adds. */
export interface ForwardContext {
  /** Remote IP of the public client, IPv4 or IPv6 without brackets or port. An RFC 7239 obfuscated
   *  identifier (`_hidden`) is passed through; anything else is reported as `unknown`. */
  clientAddress: string;
  /** Remote port of the client; only the `Forwarded` element carries it. */
  clientPort?: number;
  proto: 'http' | 'https';
  /** The Host the client asked for, as received. Empty means unknown (no host is reported). */
  host: string;
  /** The id this request is logged under, normally from `chooseRequestId`. */
  requestId: string;
  /** This hop's pseudonym in `Via` (RFC 9110 §7.6.3), e.g. `sluice`. A token. */
  via: string;
  /** HTTP version of the client's request as Node reports it: `1.0`, `1.1` or `2.0`. */
  httpVersion: string;
  /** The request is an Upgrade (`req.upgrade`): Upgrade and `Connection: upgrade` go through. */
  upgrade: boolean;
}

/** What the controller knows when it returns the target's response to the client. */
export interface ResponseContext {
  via: string;
  requestId: string;
  /** HTTP version of the response as received from the target. */
  httpVersion: string;
  /** The response is a 101 Switching Protocols: Upgrade and `Connection: upgrade` go through. */
  upgrade: boolean;
}

interface Field {
  name: string;
  /** The name lowercased: field names are case-insensitive (RFC 9110 §5.1). */
  key: string;
  value: string;
}

// RFC 9110 §7.6.1: an intermediary removes these whether or not Connection names them.
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive', // HTTP/1.0 persistent connections (RFC 2068 §19.7.1)
  'proxy-connection', // a non-standard HTTP/1.0 relic (RFC 9112 Appendix C.2.2)
  // TE says what the sender of *this* connection accepts, "trailers" included (RFC 9110 §10.1.4).
  // The agent speaks for itself to the target; it must not repeat the client's promise.
  'te',
  'transfer-encoding', // framing is redone on every hop (RFC 9112 §6.1)
  'upgrade', // RFC 9110 §7.8: names protocols for this connection only
  // Not in the §7.6.1 list, but both apply only to the next hop (RFC 9110 §11.7.1, §11.7.2): the
  // credentials are for a proxy in front of us, and we are not a proxy that cooperates in proxy auth.
  // Forwarding Proxy-Authorization would leak them into the cluster.
  'proxy-authenticate',
  'proxy-authorization',
]);
// Trailer is absent on purpose: RFC 9110 §6.6.2 makes it end-to-end (RFC 2616 listed it by mistake).

/** Client-supplied fields that carry Sluice's own metadata; never forwarded (DESIGN.md §3). */
const INTERNAL_PREFIX = 'x-sluice-';

// Fields this hop sets itself on a forwarded request: the client's copies are replaced, not trusted.
// X-Forwarded-For is merged into ours rather than dropped (see forwardRequestHeaders).
const REPLACED: ReadonlySet<string> = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.6.2
const BAD_VALUE = /[\r\n\0]/;
const QUOTABLE = /^[\t -~\u0080-\u00ff]+$/; // what a quoted-string can carry (RFC 9110 §5.6.4)
const OBFUSCATED = /^_[A-Za-z0-9._-]+$/; // obfnode, RFC 7239 §6.3
const VERSION = /^\d(\.\d)?$/; // RFC 9110 §2.5
const REQUEST_ID = /^[!-~]{1,200}$/; // visible ASCII, so an id is one word in a log line

/**
 * Removes the hop-by-hop fields of RFC 9110 §7.6.1: the fixed set above and every field that a
 * `Connection` header names. With `keepUpgrade` the Upgrade fields stay and a single
 * `Connection: upgrade` is appended, so the next hop can complete the upgrade (RFC 9110 §7.8).
 * Fields with an invalid name or a CR, LF or NUL in the value are dropped. The input is not modified.
 */
export function stripHopByHop(raw: readonly string[], opts: { keepUpgrade: boolean }): string[] {
  return flatten(stripFields(parseFields(raw), opts.keepUpgrade));
}

/**
 * The headers to send towards the target for a client's request: hop-by-hop fields stripped,
 * client-supplied `X-Sluice-*` removed, and this hop's X-Forwarded-For/Proto/Host, Forwarded, Via and
 * X-Request-Id appended. `loop` is true when an incoming Via already names `ctx.via`
 * (RFC 9110 §7.6.3); the caller should refuse the request (508) instead of forwarding it.
 */
export function forwardRequestHeaders(
  raw: readonly string[],
  ctx: ForwardContext,
): { headers: string[]; loop: boolean } {
  const fields = parseFields(raw);
  // Checked before stripping, so a `Connection: via` cannot hide a loop.
  const loop = fields.some((f) => f.key === 'via' && viaNamesHop(f.value, ctx.via));
  // Stripping comes first and our fields are added after it, so a `Connection` token cannot remove them.
  const kept = stripFields(fields, ctx.upgrade);
  const forwardedFor: string[] = [];
  const out: Field[] = [];
  for (const f of kept) {
    if (f.key === 'x-forwarded-for') forwardedFor.push(...commaList(f.value));
    if (!REPLACED.has(f.key) && !f.key.startsWith(INTERNAL_PREFIX) && isWellFormedList(f)) out.push(f);
  }
  for (const f of addedRequestFields(ctx, forwardedFor)) out.push(f);
  return { headers: flatten(out), loop };
}

/**
 * The headers to return to the client for the target's response: hop-by-hop fields stripped (Upgrade
 * kept for a 101), Via appended, and X-Request-Id added when the target did not set one.
 */
export function forwardResponseHeaders(raw: readonly string[], ctx: ResponseContext): string[] {
  const out: Field[] = [];
  let hasRequestId = false;
  for (const f of stripFields(parseFields(raw), ctx.upgrade)) {
    if (!isWellFormedList(f)) continue;
    out.push(f);
    if (f.key === 'x-request-id') hasRequestId = true;
  }
  out.push(field('Via', viaElement(ctx.httpVersion, ctx.via)));
  if (!hasRequestId) out.push(field('X-Request-Id', ctx.requestId));
  return flatten(out);
}

/**
 * The id to log and forward a request under. The client's X-Request-Id is kept so that its traces
 * join ours, but only when there is exactly one and it is 1 to 200 visible ASCII characters; an id
 * with spaces, control bytes or ambiguity would make logs forgeable, so a fresh one is generated.
 */
export function chooseRequestId(raw: readonly string[], generate: () => string): string {
  const ids = parseFields(raw).filter((f) => f.key === 'x-request-id');
  const only = ids.length === 1 ? ids[0]!.value : '';
  return REQUEST_ID.test(only) ? only : generate();
}

function addedRequestFields(ctx: ForwardContext, forwardedFor: string[]): Field[] {
  const host = QUOTABLE.test(ctx.host) ? ctx.host : undefined;
  // X-Forwarded-For is a list that grows by one per hop; consumers trust it from the right. Proto and
  // Host are single values describing this edge, so the client's claims (say, https) are replaced.
  const added = [
    field('X-Forwarded-For', [...forwardedFor, clientNode(ctx.clientAddress)].join(', ')),
    field('X-Forwarded-Proto', ctx.proto),
  ];
  if (host !== undefined) added.push(field('X-Forwarded-Host', host));
  added.push(
    field('Forwarded', forwardedElement(ctx, host)),
    field('Via', viaElement(ctx.httpVersion, ctx.via)),
    field('X-Request-Id', ctx.requestId),
  );
  return added;
}

function stripFields(fields: readonly Field[], keepUpgrade: boolean): Field[] {
  const named = connectionOptions(fields);
  // RFC 9112 §6.3: with Transfer-Encoding present, Content-Length is wrong and must not be forwarded,
  // or the next hop could frame the body by it (request smuggling).
  let chunked = false;
  for (const f of fields) if (f.key === 'transfer-encoding') chunked = true;
  const kept: Field[] = [];
  let upgrade = false;
  for (const f of fields) {
    if (keepUpgrade && f.key === 'upgrade') {
      upgrade = true;
      kept.push(f);
    } else if (!HOP_BY_HOP.has(f.key) && !(named !== null && named.has(f.key))) {
      if (!(chunked && f.key === 'content-length')) kept.push(f);
    }
  }
  // The Connection we send is our own control data (RFC 9110 §7.6.1 allows replacing it); an Upgrade
  // without `Connection: upgrade` would be ignored by the next hop (RFC 9110 §7.8).
  if (upgrade) kept.push(field('Connection', 'upgrade'));
  return kept;
}

// Connection is a comma-separated list of case-insensitive tokens and may be repeated (RFC 9110 §5.3).
function connectionOptions(fields: readonly Field[]): Set<string> | null {
  let options: Set<string> | null = null;
  for (const f of fields) {
    if (f.key !== 'connection') continue;
    options ??= new Set<string>();
    for (const option of commaList(f.value)) options.add(option.toLowerCase());
  }
  return options;
}

// A received-by that equals our pseudonym means the request has been through this hop already. Only
// the received-by of each element counts, not the protocol or a comment (RFC 9110 §7.6.3).
function viaNamesHop(value: string, pseudonym: string): boolean {
  const self = pseudonym.toLowerCase();
  return splitList(value).items.some((element) => element.split(/\s+/)[1]?.toLowerCase() === self);
}

// A Via or Forwarded line with an unterminated comment or quoted-string would swallow the element we
// append once a later hop combines the lines with commas (RFC 9110 §5.3), hiding a loop or a client
// address, so such a line is dropped.
function isWellFormedList(f: Field): boolean {
  return (f.key !== 'via' && f.key !== 'forwarded') || splitList(f.value).complete;
}

function viaElement(httpVersion: string, pseudonym: string): string {
  // The protocol name is omitted for HTTP (RFC 9110 §7.6.3); an unrecognised version is reported as 1.1.
  return `${VERSION.test(httpVersion) ? httpVersion : '1.1'} ${pseudonym}`;
}

// RFC 7239 §4: for=, host= and proto= of this hop, each value a token or a quoted-string.
function forwardedElement(ctx: ForwardContext, host: string | undefined): string {
  const pairs = [`for=${forwardedValue(forwardedNode(ctx.clientAddress, ctx.clientPort))}`];
  if (host !== undefined) pairs.push(`host=${forwardedValue(host)}`);
  pairs.push(`proto=${ctx.proto}`);
  return pairs.join(';');
}

// RFC 7239 §6: an IPv6 node is bracketed, and a port follows a colon. Neither '[' nor ':' is a token
// character, so forwardedValue quotes such nodes.
function forwardedNode(address: string, port: number | undefined): string {
  const node = clientNode(address);
  const name = isIP(node) === 6 ? `[${node}]` : node;
  const hasPort = port !== undefined && Number.isInteger(port) && port > 0 && port <= 65535;
  return hasPort && node !== 'unknown' ? `${name}:${port}` : name;
}

// RFC 7239 §6.2/§6.3: an address we cannot vouch for is "unknown", never copied into a header.
function clientNode(address: string): string {
  return isIP(address) !== 0 || OBFUSCATED.test(address) ? address : 'unknown';
}

function forwardedValue(value: string): string {
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
}

function parseFields(raw: readonly string[]): Field[] {
  const fields: Field[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    // RFC 9110 §5.5: CR, LF and NUL in a value are invalid and dangerous (obs-fold included). A name
    // that is not a token, such as an HTTP/2 pseudo-header, has no meaning in an HTTP/1.1 message.
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) continue;
    fields.push(field(name, value));
  }
  return fields;
}

function field(name: string, value: string): Field {
  return { name, key: name.toLowerCase(), value };
}

function flatten(fields: readonly Field[]): string[] {
  const raw = new Array<string>(fields.length * 2);
  for (let i = 0; i < fields.length; i++) {
    raw[2 * i] = fields[i]!.name;
    raw[2 * i + 1] = fields[i]!.value;
  }
  return raw;
}

// A list of plain tokens or addresses (Connection, X-Forwarded-For): empty elements are ignored
// (RFC 9110 §5.6.1).
function commaList(value: string): string[] {
  const items: string[] = [];
  for (const part of value.split(',')) {
    const item = part.trim();
    if (item !== '') items.push(item);
  }
  return items;
}

// Splits a list at the commas outside quoted-strings (RFC 9110 §5.6.4) and comments (§5.6.5).
// `complete` is false when a quoted-string or a comment is left open.
function splitList(value: string): { items: string[]; complete: boolean } {
  const items: string[] = [];
  let start = 0;
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if ((quoted || depth > 0) && c === '\\') i++;
    else if (quoted) quoted = c !== '"';
    else if (c === '(') depth++;
    else if (depth > 0) {
      if (c === ')') depth--;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      items.push(value.slice(start, i));
      start = i + 1;
    }
  }
  items.push(value.slice(start));
  return {
    items: items.map((item) => item.trim()).filter((item) => item !== ''),
    complete: !quoted && depth === 0,
  };
}
