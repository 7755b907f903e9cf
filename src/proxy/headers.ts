// Header rewriting at the proxy edge: what the controller forwards towards the target and what it hands
// back to the client. Headers travel as Node's raw list (`IncomingMessage.rawHeaders`: name, value, name,
// value, ...) so that order, case and repeated fields survive. Pure: no I/O, no sockets.
//
// RFC references: RFC 9110 (HTTP Semantics), RFC 9112 (HTTP/1.1), RFC 7239 (Forwarded).
import { BlockList, isIP } from 'node:net';
import { TOKEN } from '../syntax.js';

/** What the controller knows about the client's request, for the headers this hop adds. */
export interface ForwardContext {
  /** Remote IP of the connection's peer, IPv4 or IPv6 without brackets or port. An RFC 7239 obfuscated
   *  identifier (`_hidden`) is passed through; anything else is reported as `unknown`. */
  clientAddress: string;
  /** Remote port of the peer; only the `Forwarded` element carries it. */
  clientPort?: number;
  /**
   * The peer is a trusted proxy (`http.trustedProxies`): its X-Forwarded-*, X-Real-Ip and Forwarded
   * fields are kept, and X-Forwarded-For is appended to. From any other peer they are claims anyone
   * can make, and are removed.
   */
  trustedPeer: boolean;
  /** Add an RFC 7239 `Forwarded` element (`http.forwarded`); off by default, as in nginx and Traefik. */
  forwarded: boolean;
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
  /**
   * A Strict-Transport-Security value to add when the target sent none (the edge gives one only for a
   * response over TLS); a target's own is kept as it is.
   */
  hsts?: string | undefined;
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
  'http2-settings', // RFC 9113 §3.2.1 (RFC 7540): the h2c upgrade's settings, for this connection only
  // Not in the §7.6.1 list, but both apply only to the next hop (RFC 9110 §11.7.1, §11.7.2): the
  // credentials are for a proxy in front of us, and we are not a proxy that cooperates in proxy auth.
  // Forwarding Proxy-Authorization would leak them into the cluster.
  'proxy-authenticate',
  'proxy-authorization',
]);
// Trailer is absent on purpose: RFC 9110 §6.6.2 makes it end-to-end (RFC 2616 listed it by mistake).

// A Connection header may not take these with it: the request is routed by Host, and the framing
// fields are this hop's to handle (RFC 9112 §6). Transfer-Encoding is always redone (HOP_BY_HOP).
const NEVER_NAMED: ReadonlySet<string> = new Set(['host', 'content-length', 'transfer-encoding']);

/** Client-supplied fields that carry Sluice's own metadata; never forwarded (DESIGN.md §3). */
const INTERNAL_PREFIX = 'x-sluice-';

// What proxies say about the client: X-Forwarded-For, -Proto, -Host, -Port, -Prefix, -Ssl, ... (every
// X-Forwarded-* field; Traefik's list is a subset), X-Real-Ip and Forwarded. Only a trusted proxy may
// say it; from anyone else each is removed and this hop's own values are sent instead.
const FORWARDING_PREFIX = 'x-forwarded-';
const FORWARDING: ReadonlySet<string> = new Set(['x-real-ip', 'forwarded']);

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
 * client-supplied `X-Sluice-*` removed, the client's forwarding fields removed unless the peer is a
 * trusted proxy, and this hop's X-Forwarded-For/Proto/Host, Via, X-Request-Id (and Forwarded when
 * asked for) appended. `loop` is true when an incoming Via already names `ctx.via`
 * (RFC 9110 §7.6.3); the caller should refuse the request (508) instead of forwarding it.
 */
export function forwardRequestHeaders(
  raw: readonly string[],
  ctx: ForwardContext,
): { headers: string[]; loop: boolean } {
  const fields = parseFields(raw);
  // Checked before stripping, so a `Connection: via` cannot hide a loop.
  const loop = fields.some((f) => f.key === 'via' && viaNamesHop(f.value, ctx.via));
  // Trailer announces a trailer section, which only chunked framing has (RFC 9112 §7.1.2). Node's
  // http.request throws on a Trailer field without it, so such a field must not reach the agent.
  const chunked = fields.some((f) => f.key === 'transfer-encoding');
  // Stripping comes first and our fields are added after it, so a `Connection` token cannot remove them.
  const kept = stripFields(fields, ctx.upgrade);
  const forwardedFor: string[] = [];
  const claims = { proto: false, host: false };
  const out: Field[] = [];
  for (const f of kept) {
    if (f.key === 'x-request-id' || f.key.startsWith(INTERNAL_PREFIX) || !isWellFormedList(f)) continue;
    if (f.key === 'trailer' && !chunked) continue;
    if (f.key.startsWith(FORWARDING_PREFIX) || FORWARDING.has(f.key)) {
      if (!ctx.trustedPeer) continue;
      // X-Forwarded-For is a list that this hop extends: merged into the one line added below.
      if (f.key === 'x-forwarded-for') {
        forwardedFor.push(...commaList(f.value));
        continue;
      }
      if (f.key === 'x-forwarded-proto') claims.proto = true;
      if (f.key === 'x-forwarded-host') claims.host = true;
    }
    out.push(f);
  }
  for (const f of addedRequestFields(ctx, forwardedFor, claims)) out.push(f);
  return { headers: flatten(out), loop };
}

/**
 * The client's address as far as this hop can tell, for logs and the stream's metadata: the peer
 * itself, unless the peer is a trusted proxy; then the rightmost X-Forwarded-For element that is not
 * a trusted proxy (an address a client put further left is its own claim), or the leftmost one when
 * every element is trusted. An element that is not an IP address ends the walk at the hop that added
 * it. `trusts` says whether an address is a trusted proxy.
 */
export function clientAddress(
  raw: readonly string[],
  peer: string,
  trusts: (address: string) => boolean,
): string {
  if (!trusts(peer)) return peer;
  const chain: string[] = [];
  for (const f of parseFields(raw)) if (f.key === 'x-forwarded-for') chain.push(...commaList(f.value));
  let client = peer;
  for (let i = chain.length - 1; i >= 0; i--) {
    const address = bareAddress(chain[i]!);
    if (address === undefined) return client;
    client = address;
    if (!trusts(address)) return client;
  }
  return client;
}

/**
 * A check for `http.trustedProxies`: CIDR ranges (`10.0.0.0/8`, `fd00::/8`) as the config validated
 * them. IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
 */
export function trustedProxyCheck(cidrs: readonly string[]): (address: string) => boolean {
  if (cidrs.length === 0) return () => false;
  const list = new BlockList();
  for (const cidr of cidrs) {
    const slash = cidr.lastIndexOf('/');
    const network = cidr.slice(0, slash);
    list.addSubnet(network, Number(cidr.slice(slash + 1)), isIP(network) === 6 ? 'ipv6' : 'ipv4');
  }
  return (address) => {
    const bare = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    const family = isIP(bare);
    return family !== 0 && list.check(bare, family === 6 ? 'ipv6' : 'ipv4');
  };
}

// An X-Forwarded-For element as proxies write it: an address, maybe with a port (`192.0.2.1:443`,
// `[2001:db8::1]:443`, as Azure's and some others do). Undefined when it is not an address.
function bareAddress(element: string): string | undefined {
  if (isIP(element) !== 0) return element;
  const v6 = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(element);
  if (v6 !== null) return isIP(v6[1]!) === 6 ? v6[1] : undefined;
  const v4 = /^([\d.]+):\d{1,5}$/.exec(element);
  return v4 !== null && isIP(v4[1]!) === 4 ? v4[1] : undefined;
}

/**
 * The headers to return to the client for the target's response: hop-by-hop fields stripped (Upgrade
 * kept for a 101), Via appended, and X-Request-Id added when the target did not set one.
 */
export function forwardResponseHeaders(raw: readonly string[], ctx: ResponseContext): string[] {
  const out: Field[] = [];
  let hasRequestId = false;
  let hasHsts = false;
  for (const f of stripFields(parseFields(raw), ctx.upgrade)) {
    if (!isWellFormedList(f)) continue;
    out.push(f);
    if (f.key === 'x-request-id') hasRequestId = true;
    else if (f.key === 'strict-transport-security') hasHsts = true;
  }
  out.push(field('Via', viaElement(ctx.httpVersion, ctx.via)));
  if (!hasRequestId) out.push(field('X-Request-Id', ctx.requestId));
  if (ctx.hsts !== undefined && !hasHsts) out.push(field('Strict-Transport-Security', ctx.hsts));
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

function addedRequestFields(
  ctx: ForwardContext,
  forwardedFor: string[],
  claims: { proto: boolean; host: boolean },
): Field[] {
  const host = QUOTABLE.test(ctx.host) ? ctx.host : undefined;
  // X-Forwarded-For is a list that grows by one per hop; consumers trust it from the right. Proto and
  // Host describe the edge the client reached: a trusted proxy's values (say, the https of a load
  // balancer that ended TLS) stand, and this hop's are sent only when it gave none.
  const added = [field('X-Forwarded-For', [...forwardedFor, clientNode(ctx.clientAddress)].join(', '))];
  if (!claims.proto) added.push(field('X-Forwarded-Proto', ctx.proto));
  if (host !== undefined && !claims.host) added.push(field('X-Forwarded-Host', host));
  if (ctx.forwarded) added.push(field('Forwarded', forwardedElement(ctx, host)));
  added.push(field('Via', viaElement(ctx.httpVersion, ctx.via)), field('X-Request-Id', ctx.requestId));
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
    } else if (!HOP_BY_HOP.has(f.key) && !(named !== null && named.has(f.key) && !NEVER_NAMED.has(f.key))) {
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
  // From HTTP/2 on a version has no minor number (RFC 9113 §3: `2`), though Node reports `2.0`.
  if (!VERSION.test(httpVersion)) return `1.1 ${pseudonym}`;
  const major = httpVersion.charAt(0);
  return `${major >= '2' ? major : httpVersion} ${pseudonym}`;
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
