// The routes an agent discovers in its cluster (agent/discovery.ts), as one typed value and as the JSON
// that carries it to the controller. A snapshot is always whole: every route the cluster claims right
// now, never a delta, so that a receiver replaces what it held and a lost or reordered message cannot
// leave a stale route behind. Both ends share this module (frp's lesson: neither side defines a type
// the other imports), and both check a snapshot with the same rules: the agent before it sends one,
// the controller on receipt, since it does not trust the agent.
//
// JSON shape (docs/kubernetes.md, "Discovery"):
//   {"routes":[{"host":"app.example.test","path":"/api","target":"http://web.shop.svc.cluster.local:8080",
//               "source":"ingress","object":"shop/web"}]}
// Unknown fields are ignored, at the top and in each route, so that a newer agent may add some.
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { isHostname, MAX_HOSTNAME } from '../syntax.js';

export type RouteSource = 'ingress' | 'service';

export interface DiscoveredRoute {
  /** Lowercase, no trailing dot; `*.suffix` for an Ingress wildcard host. */
  readonly host: string;
  /** A path prefix matched at segment boundaries: `/`, or `/a/b` without a trailing slash. */
  readonly path: string;
  /** `http://SERVICE.NAMESPACE.svc.CLUSTER-DOMAIN:PORT`, the Service's in-cluster name and port. */
  readonly target: string;
  /** The kind of object the route came from. */
  readonly source: RouteSource;
  /** The object, as `namespace/name`. */
  readonly object: string;
}

/** Every discovered route, sorted by host then path; no two share a host and path. */
export type RouteSnapshot = readonly DiscoveredRoute[];

/** At most this many routes in one snapshot: a cluster claiming more is refused whole, not cut. */
export const MAX_SNAPSHOT_ROUTES = 10_000;
/** At most this many bytes of JSON for one snapshot (about 300 bytes a route at the limit). */
export const MAX_SNAPSHOT_BYTES = 4 << 20;
const MAX_PATH = 1024;
const MAX_OBJECT = 253 + 1 + 253;

// RFC 3986 §3.3 segment characters (pchar), percent-encoded octets kept as they are; as routes.ts.
const SEGMENT = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+$/;
const TARGET =
  /^http:\/\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.svc\.([a-z0-9.-]{1,200}):([1-9]\d{0,4})$/;
const OBJECT = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\/[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;

/** A route host as a snapshot holds it (lowercase, no trailing dot), or undefined when it is none. */
export function snapshotHost(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const host = value.endsWith('.') ? value.slice(0, -1) : value;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  return host.length <= MAX_HOSTNAME && isHostname(name) ? host.toLowerCase() : undefined;
}

/**
 * A route path as a snapshot holds it, or undefined when it is none. A trailing slash adds nothing to a
 * segment prefix (Ingress `Prefix` paths), so `/api/` is `/api`; a missing path is `/`.
 */
export function snapshotPath(value: unknown): string | undefined {
  if (value === undefined || value === '/') return '/';
  if (typeof value !== 'string' || !value.startsWith('/') || value.length > MAX_PATH) return undefined;
  const prefix = value.endsWith('/') ? value.slice(0, -1) : value;
  const segments = prefix.slice(1).split('/');
  return segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..') ? prefix : undefined;
}

/** The JSON text of a snapshot: `{"routes":[…]}` with the fields in a fixed order. */
export function encodeRouteSnapshot(routes: RouteSnapshot): string {
  const plain = routes.map(({ host, path, target, source, object }) => ({
    host,
    path,
    target,
    source,
    object,
  }));
  return JSON.stringify({ routes: plain });
}

export type DecodedSnapshot = { ok: true; routes: RouteSnapshot } | { ok: false; reason: string };

/**
 * Reads and checks a snapshot's JSON: every field present and well formed, no host and path twice,
 * within the limits. A snapshot with one bad route is refused whole (the reason names it), so that a
 * receiver never half-applies one. The result is sorted and frozen.
 */
export function decodeRouteSnapshot(text: string): DecodedSnapshot {
  if (text.length > MAX_SNAPSHOT_BYTES) return fail(`is over ${MAX_SNAPSHOT_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return fail('is not JSON');
  }
  const list = isRecord(parsed) ? parsed.routes : undefined;
  if (!Array.isArray(list)) return fail('has no "routes" list');
  if (list.length > MAX_SNAPSHOT_ROUTES) return fail(`has over ${MAX_SNAPSHOT_ROUTES} routes`);
  const routes: DiscoveredRoute[] = [];
  const seen = new Set<string>();
  for (const [i, item] of list.entries()) {
    const route = checkRoute(item);
    if (typeof route === 'string') return fail(`route ${i}: ${route}`);
    const key = `${route.host} ${route.path}`;
    if (seen.has(key)) return fail(`route ${i}: ${route.host}${route.path} appears twice`);
    seen.add(key);
    routes.push(route);
  }
  return { ok: true, routes: Object.freeze(sortRoutes(routes)) };
}

/** Sorts routes by host, then path, in place; the order a snapshot is sent and compared in. */
export function sortRoutes(routes: DiscoveredRoute[]): DiscoveredRoute[] {
  return routes.sort((a, b) => compare(a.host, b.host) || compare(a.path, b.path));
}

function checkRoute(item: unknown): DiscoveredRoute | string {
  if (!isRecord(item)) return 'is not an object';
  const host = snapshotHost(item.host);
  if (host === undefined || host !== item.host) return 'host must be a lowercase hostname or *.suffix';
  const path = snapshotPath(item.path);
  if (path === undefined || path !== item.path) return 'path must be a normalized path prefix';
  const { target, source, object } = item;
  if (typeof target !== 'string' || !isTarget(target)) {
    return 'target must be http://SERVICE.NAMESPACE.svc.DOMAIN:PORT';
  }
  if (source !== 'ingress' && source !== 'service') return 'source must be ingress or service';
  if (typeof object !== 'string' || object.length > MAX_OBJECT || !OBJECT.test(object)) {
    return 'object must be namespace/name';
  }
  return Object.freeze({ host, path, target, source, object });
}

function isTarget(target: string): boolean {
  const m = TARGET.exec(target);
  return m !== null && Number(m[4]) <= 65535 && isHostname(m[3]!);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function fail(reason: string): DecodedSnapshot {
  return { ok: false, reason: `route snapshot ${reason}` };
}

// --- The control stream that carries a snapshot (docs/protocol.md §12) ---------------------------------
//
// The agent opens a stream whose SYN metadata is CONTROL_ROUTES_META, writes one snapshot's JSON and
// ends its side; the controller answers with one RoutesReply's JSON and ends its side. One message
// each way per stream, so that neither side needs framing of its own: the stream's FIN ends it.

/** The SYN metadata of a route snapshot's control stream. `v` is the message version. */
export const CONTROL_KIND = 'control';
export const ROUTES_MESSAGE = 'routes';
export const ROUTES_VERSION = 1;
export const CONTROL_ROUTES_META = Object.freeze({
  kind: CONTROL_KIND,
  type: ROUTES_MESSAGE,
  v: ROUTES_VERSION,
});
/** At most this many bytes of JSON in a reply (a refusal per route, with its reason, at the most). */
export const MAX_REPLY_BYTES = MAX_SNAPSHOT_BYTES;
const MAX_REASON = 300;

/** A route the controller would not store, and why. */
export interface RefusedRoute {
  readonly host: string;
  readonly path: string;
  readonly object: string;
  readonly reason: string;
}

/** The controller's answer to a snapshot. */
export interface RoutesReply {
  /** How many of the snapshot's routes the controller now serves. */
  readonly stored: number;
  /** The snapshot's other routes. */
  readonly refused: readonly RefusedRoute[];
  /** The public address to write into each served Ingress's status; absent: none configured. */
  readonly address?: string;
}

export function encodeRoutesReply(reply: RoutesReply): string {
  const refused = reply.refused.map(({ host, path, object, reason }) => ({
    host,
    path,
    object,
    reason: reason.slice(0, MAX_REASON),
  }));
  return JSON.stringify({
    v: ROUTES_VERSION,
    stored: reply.stored,
    refused,
    ...(reply.address === undefined ? {} : { address: reply.address }),
  });
}

export type DecodedReply = { ok: true; reply: RoutesReply } | { ok: false; reason: string };

/** Reads a reply's JSON; unknown fields are ignored, a malformed one is refused whole. */
export function decodeRoutesReply(text: string): DecodedReply {
  const bad = (why: string): DecodedReply => ({ ok: false, reason: `routes reply ${why}` });
  if (text.length > MAX_REPLY_BYTES) return bad(`is over ${MAX_REPLY_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return bad('is not JSON');
  }
  if (!isRecord(parsed)) return bad('is not an object');
  const { stored, refused, address } = parsed;
  if (typeof stored !== 'number' || !Number.isSafeInteger(stored) || stored < 0) {
    return bad('has no "stored" count');
  }
  if (!Array.isArray(refused)) return bad('has no "refused" list');
  const list: RefusedRoute[] = [];
  for (const item of refused) {
    if (
      !isRecord(item) ||
      typeof item.host !== 'string' ||
      typeof item.path !== 'string' ||
      typeof item.object !== 'string' ||
      typeof item.reason !== 'string'
    ) {
      return bad('has a refusal without host, path, object and reason');
    }
    const reason = item.reason.slice(0, MAX_REASON);
    list.push({ host: item.host, path: item.path, object: item.object, reason });
  }
  if (address !== undefined && (typeof address !== 'string' || !isAddress(address))) {
    return bad('has an address that is no hostname or IP address');
  }
  return { ok: true, reply: { stored, refused: list, ...(address === undefined ? {} : { address }) } };
}

/** A public address for an Ingress status: a hostname, or an IPv4 or IPv6 address. */
export function isAddress(value: string): boolean {
  return value.length <= MAX_HOSTNAME && (isIP(value) !== 0 || isHostname(value));
}

/**
 * Reads a whole message from a stream: resolves with its bytes once the peer ends its side, or rejects
 * once more than `max` bytes came (the caller resets the stream) or the stream fails.
 */
export function readMessage(stream: Readable, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        cleanup();
        reject(new Error(`the message is over ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('the stream closed before the message ended'));
    };
    const cleanup = (): void => {
      stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    };
    stream.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}
