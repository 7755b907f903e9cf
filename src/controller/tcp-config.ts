// The `tcpRoutes` and `tcp` keys of the controller's config file (docs/tcp.md). A TCP route's target
// is tcp://host:port, which the HTTP routes' validator refuses, so it has its own checks here; every
// failure is a ConfigError naming the key, as config.ts does. The route and limit types live here, not
// beside the listener, so that config.ts needs nothing that reaches the tunnels.
import { isIP } from 'node:net';
import { ConfigError } from '../errors.js';

/** One TCP route: where it listens, and where its bytes go. */
export interface TcpRoute {
  /** `host:port`; port 0 binds a free one (the bound address is logged). */
  readonly listen: string;
  readonly cluster: string;
  /** `tcp://host:port`, resolved by the agent. */
  readonly target: string;
  readonly proxyProtocol?: 'v2';
}

export interface TcpLimits {
  /** Open connections one client address may hold on one route; 0: no limit. */
  readonly maxConnectionsPerClient: number;
  /** Open connections one route may hold; 0: no limit. */
  readonly maxConnectionsPerRoute: number;
}

export const DEFAULT_TCP_LIMITS: TcpLimits = Object.freeze({
  maxConnectionsPerClient: 64,
  maxConnectionsPerRoute: 10_000,
});

export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(listen.slice(i + 1)) };
}

const ROUTE_KEYS = ['listen', 'cluster', 'target', 'proxyProtocol'];
const LIMIT_KEYS = ['maxConnectionsPerClient', 'maxConnectionsPerRoute'];
const HOST = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

/** `tcpRoutes` as TcpRoutes, each naming a cluster of `clusters`, no two on one listen address. */
export function checkTcpRoutes(input: readonly unknown[], clusters: readonly string[]): TcpRoute[] {
  const seen = new Map<string, number>();
  return input.map((raw, i) => {
    const key = `tcpRoutes[${i}]`;
    const route = validateTcpRoute(raw, key);
    if (!clusters.includes(route.cluster)) {
      const names = clusters.length > 0 ? clusters.join(', ') : 'none';
      throw new ConfigError(
        `${key}.cluster`,
        `names no cluster in clusters: "${route.cluster}" (known: ${names})`,
      );
    }
    const first = seen.get(route.listen);
    if (first !== undefined && splitListen(route.listen).port !== 0) {
      throw new ConfigError(`${key}.listen`, `repeats tcpRoutes[${first}].listen "${route.listen}"`);
    }
    seen.set(route.listen, i);
    return route;
  });
}

export function validateTcpRoute(raw: unknown, key: string): TcpRoute {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(key, 'must be a mapping with listen, cluster and target');
  }
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!ROUTE_KEYS.includes(k))
      throw new ConfigError(`${key}.${k}`, `is not a known key (known: ${ROUTE_KEYS.join(', ')})`);
  }
  const listen = r.listen;
  if (typeof listen !== 'string' || !isHostPort(listen)) {
    throw new ConfigError(`${key}.listen`, 'must be host:port (an IP address; port 0 binds a free one)');
  }
  if (typeof r.cluster !== 'string' || r.cluster === '')
    throw new ConfigError(`${key}.cluster`, 'must be a cluster name');
  const target = r.target;
  if (typeof target !== 'string' || !isTcpTarget(target)) {
    throw new ConfigError(`${key}.target`, 'must be tcp://host:port with a port from 1 to 65535');
  }
  if (r.proxyProtocol !== undefined && r.proxyProtocol !== 'v2') {
    throw new ConfigError(`${key}.proxyProtocol`, 'must be v2 when set');
  }
  return { listen, cluster: r.cluster, target, ...(r.proxyProtocol === 'v2' ? { proxyProtocol: 'v2' } : {}) };
}

/** The `tcp` mapping: its limits, 0 meaning none. */
export function resolveTcpLimits(raw: Record<string, unknown> | undefined): TcpLimits {
  if (raw === undefined) return DEFAULT_TCP_LIMITS;
  const out: Record<string, number> = { ...DEFAULT_TCP_LIMITS };
  for (const [k, v] of Object.entries(raw)) {
    if (!LIMIT_KEYS.includes(k))
      throw new ConfigError(`tcp.${k}`, `is not a known key (known: ${LIMIT_KEYS.join(', ')})`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 1_000_000) {
      throw new ConfigError(`tcp.${k}`, 'must be a whole number from 0 (no limit) to 1000000');
    }
    out[k] = v;
  }
  return Object.freeze(out as unknown as TcpLimits);
}

function isHostPort(value: string): boolean {
  const i = value.lastIndexOf(':');
  if (i <= 0) return false;
  const host = value.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = value.slice(i + 1);
  return isIP(host) !== 0 && /^\d{1,5}$/.test(port) && Number(port) <= 65535;
}

function isTcpTarget(value: string): boolean {
  if (!value.startsWith('tcp://')) return false;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(url.port);
  return (
    url.pathname === '' &&
    url.search === '' &&
    url.username === '' &&
    Number.isInteger(port) &&
    port >= 1 &&
    port <= 65535 &&
    (isIP(host) !== 0 || HOST.test(host)) &&
    value === `tcp://${url.host}`
  );
}
