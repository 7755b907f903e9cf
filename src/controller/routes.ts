// The controller's route table (DESIGN §3): which cluster and target serve a request, chosen by its Host
// and path. Pure: no I/O. Routes come from the store (SQLite, Redis or the YAML config), each checked by
// validateRoute, and are indexed once so that a lookup costs O(labels in the Host), not O(routes).
//
// Precedence: the most specific host wins, then the longest path prefix. An exact host beats every
// wildcard and a longer wildcard suffix beats a shorter one. Each route is its own claim: when no path of
// the exact host matches, the wildcards are still tried (as Gateway API's HTTPRoute does), so adding
// `app.example.test/api` never takes the rest of `app.example.test` away from `*.example.test`.
//
// A route with `tls: passthrough` is no HTTP route: HTTP requests never match it. The TLS listener
// asks passthrough() for the SNI name of each connection instead, and relays those it names raw to the
// route's tcp:// target (tls-passthrough.ts).
import { isIPv4, isIPv6 } from 'node:net';
import { maskUserinfo } from '../config/values.js';
import { ConfigError } from '../errors.js';
import type { Route } from '../store/model.js';
import { isHostname, isInClusterHostname, MAX_HOSTNAME } from '../syntax.js';

const FIELDS = ['host', 'path', 'cluster', 'target', 'serverName', 'tls'];

// What the agent speaks to the target: HTTP/1.1, HTTP/1.1 over TLS, or HTTP/2 cleartext (gRPC).
const TARGET_SCHEMES: Readonly<Record<string, number>> = { http: 80, https: 443, h2c: 80 };

// RFC 3986 §3.3 segment characters (pchar), percent-encoded octets kept as they are.
const SEGMENT = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+$/;
// RFC 3986 §3.2.3: the port is any number of digits, even none.
const PORT_SUFFIX = /^(?::\d*)?$/;

/** Checks one route from config or the store; returns it normalized and frozen. */
export function validateRoute(input: unknown, key: string): Route {
  const record = asRecord(input, key);
  const host = routeHost(record.host);
  if (host === undefined) {
    throw new ConfigError(`${key}.host`, `must be a hostname or *.suffix, got ${show(record.host)}`);
  }
  const path = routePath(record.path);
  if (path === undefined) {
    const rule = 'must be a path prefix starting with "/" (no query, fragment, empty or dot segments)';
    throw new ConfigError(`${key}.path`, `${rule}, got ${show(record.path)}`);
  }
  const cluster = record.cluster;
  if (typeof cluster !== 'string' || !/^[\x21-\x7e]+$/.test(cluster)) {
    const rule = 'must be a cluster name (printable ASCII, no spaces)';
    throw new ConfigError(`${key}.cluster`, `${rule}, got ${show(cluster)}`);
  }
  if (record.tls !== undefined) return passthroughRoute(record, host, path, cluster, key);
  const target = routeTarget(record.target);
  if (typeof record.target === 'string' && /^tcp:\/\//i.test(record.target)) {
    const rule = 'is tcp://, which only a route with tls: passthrough takes (or a tcpRoutes entry)';
    throw new ConfigError(`${key}.target`, rule);
  }
  if (target === undefined) {
    const rule =
      'must be an http://, https:// or h2c:// URL with a host and port (no path, query or credentials)';
    throw new ConfigError(`${key}.target`, `${rule}, got ${show(redact(record.target))}`);
  }
  if (record.serverName === undefined) return Object.freeze({ host, path, cluster, target });
  const serverName = routeServerName(record.serverName);
  if (serverName === undefined) {
    const rule = 'must be a DNS name the target certificate carries';
    throw new ConfigError(`${key}.serverName`, `${rule}, got ${show(record.serverName)}`);
  }
  if (!target.startsWith('https:')) {
    throw new ConfigError(`${key}.serverName`, 'applies only to an https:// target');
  }
  return Object.freeze({ host, path, cluster, target, serverName });
}

/**
 * A route with `tls`: it must say `passthrough`, name a tcp:// target, and have neither a path (the
 * bytes are encrypted; there is no request to read one from) nor a serverName (the client's own TLS
 * reaches the target).
 */
function passthroughRoute(
  record: Record<string, unknown>,
  host: string,
  path: string,
  cluster: string,
  key: string,
): Route {
  if (record.tls !== 'passthrough') {
    throw new ConfigError(`${key}.tls`, `must be "passthrough", got ${show(record.tls)}`);
  }
  const target = tcpTarget(record.target);
  if (target === undefined) {
    const rule = 'must be tcp://host:port for a route with tls: passthrough';
    throw new ConfigError(`${key}.target`, `${rule}, got ${show(redact(record.target))}`);
  }
  if (path !== '/') {
    throw new ConfigError(`${key}.path`, 'must be / for a route with tls: passthrough (it sees no path)');
  }
  if (record.serverName !== undefined) {
    throw new ConfigError(`${key}.serverName`, 'applies only to an https:// target, not to tls: passthrough');
  }
  return Object.freeze({ host, path, cluster, target, tls: 'passthrough' });
}

/**
 * The hostname a Host header names, lowercase, without its port or trailing dot; an IPv6 literal keeps
 * its brackets (`[::1]`). undefined when the header is not a valid host.
 */
export function normalizeHost(header: string): string | undefined {
  if (header.startsWith('[')) {
    const end = header.indexOf(']') + 1;
    const literal = header.slice(0, end);
    const valid = end > 0 && PORT_SUFFIX.test(header.slice(end)) && isIPv6(literal.slice(1, -1));
    return valid ? literal.toLowerCase() : undefined;
  }
  const colon = header.indexOf(':');
  if (colon !== -1 && !PORT_SUFFIX.test(header.slice(colon))) return undefined;
  // A trailing dot names the same host (RFC 1034 §3.1 absolute form).
  const name = stripDot(colon === -1 ? header : header.slice(0, colon));
  return isHostname(name) ? name.toLowerCase() : undefined;
}

interface Entry {
  prefix: string;
  route: Route;
}

/** Where passthrough() found the most specific route for a name. */
type Claim = Route | 'terminated' | undefined;

export class RouteTable {
  /** Exact host → its routes, longest path prefix first. */
  readonly #exact = new Map<string, Entry[]>();
  /** Wildcard suffix (`example.test` for `*.example.test`) → its routes, longest path prefix first. */
  readonly #wildcard = new Map<string, Entry[]>();
  /** The passthrough routes by host, `*.suffix` spelt as such; each has the one path `/`. */
  readonly #passthrough = new Map<string, Route>();
  readonly #size: number;

  /** Validates every route (normalizing it) and refuses two routes with the same host and path. */
  constructor(routes: readonly Route[], key = 'routes') {
    const seen = new Map<string, number>();
    routes.forEach((input, i) => {
      const route = validateRoute(input, `${key}[${i}]`);
      const prefix = route.path ?? '/';
      const id = `${route.host} ${prefix}`;
      const first = seen.get(id);
      if (first !== undefined) {
        const what = `host ${JSON.stringify(route.host)}, path ${JSON.stringify(prefix)}`;
        throw new ConfigError(`${key}[${i}]`, `repeats ${key}[${first}]: ${what}`);
      }
      seen.set(id, i);
      if (route.tls === 'passthrough') {
        this.#passthrough.set(route.host, route);
        return;
      }
      const wildcard = route.host.startsWith('*.');
      add(wildcard ? this.#wildcard : this.#exact, wildcard ? route.host.slice(2) : route.host, {
        prefix,
        route,
      });
    });
    for (const entries of [...this.#exact.values(), ...this.#wildcard.values()]) {
      entries.sort((a, b) => b.prefix.length - a.prefix.length);
    }
    this.#size = routes.length;
  }

  get size(): number {
    return this.#size;
  }

  /** The route for a request's Host header and request-target path (a query string is ignored). */
  match(host: string, path: string): Route | undefined {
    const name = normalizeHost(host);
    if (name === undefined) return undefined;
    const bare = stripQuery(path);
    const exact = firstMatch(this.#exact.get(name), bare);
    if (exact !== undefined) return exact;
    // Each dot starts a shorter suffix, so the first hit is the longest wildcard suffix. The wildcard
    // needs at least one label in front, so the whole name is never looked up as a suffix.
    for (let dot = name.indexOf('.'); dot !== -1; dot = name.indexOf('.', dot + 1)) {
      const hit = firstMatch(this.#wildcard.get(name.slice(dot + 1)), bare);
      if (hit !== undefined) return hit;
    }
    return undefined;
  }

  /**
   * The passthrough route for a TLS connection's SNI name (lowercase, as the ClientHello reader gives
   * it), or undefined when it is to be terminated here. The most specific host claims the name, as
   * in match(): an exact HTTP route for `shop.example.test` keeps it from `*.example.test` passing
   * through; at one host a passthrough route takes every connection, whatever paths HTTP routes have.
   */
  passthrough(sni: string): Route | undefined {
    if (this.#passthrough.size === 0) return undefined;
    const exact = this.#claim(sni, this.#exact.has(sni));
    if (exact !== undefined) return exact === 'terminated' ? undefined : exact;
    for (let dot = sni.indexOf('.'); dot !== -1; dot = sni.indexOf('.', dot + 1)) {
      const suffix = sni.slice(dot + 1);
      const claim = this.#claim(`*.${suffix}`, this.#wildcard.has(suffix));
      if (claim !== undefined) return claim === 'terminated' ? undefined : claim;
    }
    return undefined;
  }

  #claim(host: string, terminated: boolean): Claim {
    return this.#passthrough.get(host) ?? (terminated ? 'terminated' : undefined);
  }
}

function add(index: Map<string, Entry[]>, host: string, entry: Entry): void {
  const entries = index.get(host);
  if (entries === undefined) index.set(host, [entry]);
  else entries.push(entry);
}

function firstMatch(entries: readonly Entry[] | undefined, path: string): Route | undefined {
  return entries?.find((entry) => pathMatches(entry.prefix, path))?.route;
}

// The raw path is matched, never a percent-decoded one: the target receives the raw path too, so both
// see the same bytes. Decoding here would let `/api%2F..%2Fadmin` be routed by one reading and served by
// another. Paths are case-sensitive (RFC 3986 §6.2.2.1) and dot segments are not resolved: the edge
// must refuse `/api/../admin` before routing if a prefix is meant to fence off the rest of a target.
function pathMatches(prefix: string, path: string): boolean {
  if (prefix === '/') return true;
  return path.startsWith(prefix) && (path.length === prefix.length || path[prefix.length] === '/');
}

function stripQuery(path: string): string {
  const end = path.search(/[?#]/);
  return end === -1 ? path : path.slice(0, end);
}

function asRecord(input: unknown, key: string): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(key, `must be a route with host, cluster and target, got ${show(input)}`);
  }
  // A misspelt `paht:` would otherwise widen the route to `/` without a word.
  const unknown = Object.keys(input).find((field) => !FIELDS.includes(field));
  if (unknown !== undefined) {
    throw new ConfigError(`${key}.${unknown}`, `is not a route field (expected ${FIELDS.join(', ')})`);
  }
  return input as Record<string, unknown>;
}

function routeHost(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const host = stripDot(value);
  const name = host.startsWith('*.') ? host.slice(2) : host;
  // The `*` counts towards the length: it stands for at least one label.
  return host.length <= MAX_HOSTNAME && isHostname(name) ? host.toLowerCase() : undefined;
}

// A trailing slash adds nothing to a segment prefix (as in Kubernetes Ingress `Prefix` paths), so
// `/api/` is stored as `/api`, which also makes it a duplicate of `/api`.
function routePath(value: unknown): string | undefined {
  if (value === undefined || value === '/') return '/';
  if (typeof value !== 'string' || !value.startsWith('/')) return undefined;
  const prefix = value.endsWith('/') ? value.slice(0, -1) : value;
  const segments = prefix.slice(1).split('/');
  return segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..') ? prefix : undefined;
}

function routeTarget(value: unknown): string | undefined {
  // The WHATWG parser also accepts `http:host` and `http:\\host`; ask for the plain spelling.
  const scheme =
    typeof value === 'string' ? /^(https?|h2c):\/\//i.exec(value)?.[1]?.toLowerCase() : undefined;
  if (scheme === undefined) return undefined;
  // h2c is no special scheme to the WHATWG parser, which would keep its host as written: parse the
  // authority as http's, so that every scheme normalizes its host (case, IPv4 spellings) the same way.
  const url = parseUrl(`http${(value as string).slice(scheme.length)}`);
  if (url === undefined || url.username !== '' || url.password !== '') return undefined;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  const port = url.port === '' ? TARGET_SCHEMES[scheme]! : Number(url.port);
  if (port === 0 || !isTargetHost(url.hostname)) return undefined;
  return `${scheme}://${url.hostname}:${port}`;
}

// SNI carries a DNS name, never an address (RFC 6066 §3).
function routeServerName(value: unknown): string | undefined {
  if (typeof value !== 'string' || isIPv4(value) || value.includes(':')) return undefined;
  const name = stripDot(value);
  return name.length <= MAX_HOSTNAME && isHostname(name) ? name.toLowerCase() : undefined;
}

function tcpTarget(value: unknown): string | undefined {
  if (typeof value !== 'string' || !/^tcp:\/\//i.test(value)) return undefined;
  const url = parseUrl(`http${value.slice(3)}`);
  if (url === undefined || url.username !== '' || url.password !== '') return undefined;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  // The port as written: tcp:// names no protocol with a default, and http's 80 would vanish in url.port.
  const port = Number(/:(\d+)\/?$/.exec(value)?.[1] ?? 0);
  if (port === 0 || !isTargetHost(url.hostname)) return undefined;
  return `tcp://${url.hostname}:${port}`;
}

function parseUrl(value: string): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

// Target hosts are inside the cluster, where names such as Docker Compose's `my_service` occur.
function isTargetHost(hostname: string): boolean {
  if (hostname.startsWith('[') || isIPv4(hostname)) return true; // the URL parser checked the address
  return isInClusterHostname(stripDot(hostname));
}

function stripDot(name: string): string {
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

// Credentials in a target would end up in the error message and so in logs.
function redact(value: unknown): unknown {
  return typeof value === 'string' ? maskUserinfo(value) : value;
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}
