// The controller's configuration: defaults < YAML file < SLUICE_* environment < flags. Validated in one
// place (STYLE.md lesson 6): every failure is a ConfigError naming the exact key, e.g.
// `routes[2].target` or `http.responseTimeout`; unknown keys are refused; the result is frozen.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { type Document, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import {
  deepFreeze,
  envValue,
  formatBytes,
  formatMs,
  type HostPort,
  type LogLevel,
  MASKED,
  maskUserinfo,
  maskWhenSerialized,
  orThrow,
  parseBoundedDuration,
  parseFlagDuration,
  parseBoundedInteger,
  parseDurationMs,
  parseHostPort,
  parseLogLevel,
  parseNonEmpty,
  parseOptionalHostPort,
  Refusal,
  show,
} from '../config/values.js';
import { flag, type Flag, type FlagValues, LOG_LEVEL_FLAG, readFlag } from '../config/flags.js';
import { ConfigError, SluiceError } from '../errors.js';
import { pathRefusal } from '../proxy/request-target.js';
import { hashToken, type Route, type StoreLocation } from '../store/model.js';
import { isAddress } from '../protocol/route-snapshot.js';
import {
  CLUSTER_NAME_RULE,
  isClusterName,
  isHostname,
  isPlainToken,
  isTokenDigest,
  MAX_HOSTNAME,
  TOKEN,
} from '../syntax.js';

export type { StoreLocation } from '../store/model.js';
import { formatTransportUrl, isSecureScheme, parseTransportUrl } from '../transport/url.js';
import { resolveSessionOptions, type SessionOptions, type SessionOptionsInput } from '../tunnel/options.js';
import type { CertFiles } from './certificates.js';
import { RouteTable, validateRoute } from './routes.js';
import { checkTcpRoutes, resolveTcpLimits, type TcpLimits, type TcpRoute } from './tcp-config.js';

export interface ClusterConfig {
  readonly name: string;
  /** `sha256:<64 hex>` digests, or plain tokens (dev only). */
  readonly tokens: readonly string[];
  /**
   * The hosts the cluster's agent may claim by route discovery: exact names, or `*.suffix` for every
   * name under a suffix; lowercase. None (the default): it may claim none.
   */
  readonly hosts?: readonly string[];
}

/** Routes that agents discover in their clusters (docs/kubernetes.md, "Discovery"). */
export interface DiscoverySettings {
  /** A cluster's discovered routes are removed once its last tunnel has been gone this long. */
  readonly gracePeriodMs: number;
  /** The public address agents write into the Ingress status (a hostname or IP); absent: none. */
  readonly address?: string;
}

export const DEFAULT_DISCOVERY: DiscoverySettings = Object.freeze({ gracePeriodMs: 5 * 60_000 });

export interface HttpOptions {
  /** Time from sending the request to the target's final response head; 504 after it. */
  readonly responseTimeoutMs: number;
  /** The client must send its whole request head within this (slow-loris). */
  readonly headersTimeoutMs: number;
  /** The client must send its whole request, body included, within this; 0 turns it off. */
  readonly requestTimeoutMs: number;
  /** How long an idle keep-alive client connection is kept. */
  readonly keepAliveTimeoutMs: number;
  /**
   * An upgraded connection (WebSocket, …) with no byte either way for this long is closed; 0 (the
   * default) never closes one for idleness: the tunnel's pings keep the path up.
   */
  readonly upgradeIdleTimeoutMs: number;
  /**
   * A request body that sends no byte for this long, before the target's answer, is answered 408 and
   * its stream reset; 0 turns it off.
   */
  readonly bodyIdleTimeoutMs: number;
  /** Plain requests in flight from one client address (upgrades not counted); more get 429. 0: off. */
  readonly maxRequestsPerClient: number;
  /** Largest request head, in bytes. */
  readonly maxHeaderBytes: number;
  /** Most header fields in one request. */
  readonly maxHeaders: number;
  /** This hop's pseudonym in Via, and the loop-detection key. */
  readonly via: string;
  /** Add an RFC 7239 Forwarded element to forwarded requests; off by default. */
  readonly forwarded: boolean;
  /**
   * CIDR ranges (`10.0.0.0/8`, `fd00::/8`) of proxies in front of the controller whose forwarding
   * headers are kept and appended to; from any other peer they are replaced. Empty by default.
   */
  readonly trustedProxies: readonly string[];
  /**
   * The plain listener answers every request with 308 to its https:// URL (the TLS listener's port),
   * except paths under `redirectExclude`. Needs the TLS listener.
   */
  readonly redirectHttps: boolean;
  /** Path prefixes the plain listener still routes when redirectHttps is on: ACME HTTP-01 by default. */
  readonly redirectExclude: readonly string[];
  /**
   * The port the redirect's Location names, for a TLS listener reached through another one (a load
   * balancer or a Service mapping 443 to 8443); 0 (the default) names the listener's port as bound.
   */
  readonly redirectPort: number;
  /**
   * The Strict-Transport-Security value added to responses sent over TLS that do not carry one, or
   * null (the default) for none.
   */
  readonly hsts: string | null;
}

/** The listener other controllers of a fleet dial, and the URL they dial it at. */
export interface PeerConfig {
  /** Transport URL, as tunnelListen: tcp://, tls://, ws:// or wss://. */
  readonly listen: string;
  /** What this controller publishes for its peers to dial, e.g. tcp://10.0.0.5:7001. */
  readonly advertise: string;
  /** The fleet secret from SLUICE_PEER_SECRET; absent: the one generated into the store. */
  readonly secret?: string;
}

/** The public TLS listener: HTTPS (and WebSockets over it) beside the plain listener. */
export interface TlsConfig {
  readonly listen: HostPort;
  /** PEM file pairs; each serves the names in its subjectAltName (certificates.ts). */
  readonly certs: readonly CertFiles[];
  /** A handshake for a name no certificate serves: the first certificate, or refused. */
  readonly unknownName: 'first' | 'refuse';
  /**
   * How long a new connection may take to send its whole ClientHello, which is read for its SNI name
   * before TLS starts (a passthrough route takes it raw); a client silent this long is closed.
   */
  readonly peekTimeoutMs: number;
}

/** tls.peekTimeout's default: a ClientHello is one packet or two; a slow mobile link gets 10 s. */
export const DEFAULT_TLS_PEEK_TIMEOUT_MS = 10_000;

export interface ControllerConfig {
  readonly listen: HostPort;
  /** The public TLS listener, when configured. */
  readonly tls?: TlsConfig;
  /** Transport URL agents dial: tcp://, tls://, ws:// or wss://. */
  readonly tunnelListen: string;
  /** PEM file paths, required for a tls:// or wss:// tunnel listener. */
  readonly tunnelCert?: string;
  readonly tunnelKey?: string;
  readonly adminListen: HostPort | null;
  /** Where the store and the admin token file live. */
  readonly dataDir: string;
  /** The admin API's bearer token from SLUICE_ADMIN_TOKEN; absent: the data dir's `admin-token` file. */
  readonly adminToken?: string;
  readonly store: StoreLocation;
  /** Required with a Redis store, refused without one. */
  readonly peer?: PeerConfig;
  readonly clusters: readonly ClusterConfig[];
  readonly routes: readonly Route[];
  readonly discovery: DiscoverySettings;
  /** Raw TCP routes, each with its own public listener (docs/tcp.md). */
  readonly tcpRoutes: readonly TcpRoute[];
  readonly tcp: TcpLimits;
  readonly http: HttpOptions;
  readonly tunnel: SessionOptions;
  readonly logLevel: LogLevel;
}

/** The `sluice controller` flags as parsed from argv; each one overrides its SLUICE_* variable. */
export type ControllerFlags = FlagValues<typeof CONTROLLER_FLAGS>;

export interface ControllerConfigInput {
  flags: ControllerFlags;
  env: NodeJS.ProcessEnv;
  /** Reads the config file as UTF-8; fs.readFileSync by default. */
  readFile?: (path: string) => string;
  /**
   * Settings that replace what the file, the environment and the flags say, for a caller that runs a
   * controller of its own making (`sluice dev`): its clusters, routes, admin token and TLS listener.
   */
  overrides?: Partial<Pick<ControllerConfig, 'clusters' | 'routes' | 'adminToken' | 'tls'>>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

export const DEFAULT_HTTP_OPTIONS: HttpOptions = Object.freeze({
  responseTimeoutMs: 60_000,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 65_000,
  upgradeIdleTimeoutMs: 0,
  bodyIdleTimeoutMs: 30_000,
  maxRequestsPerClient: 256,
  maxHeaderBytes: 16 * KiB,
  maxHeaders: 100,
  via: 'sluice',
  forwarded: false,
  trustedProxies: Object.freeze([]),
  redirectHttps: false,
  redirectExclude: Object.freeze(['/.well-known/acme-challenge/']),
  redirectPort: 0,
  hsts: null,
});

const DEFAULTS = {
  listen: { host: '127.0.0.1', port: 8080 },
  tunnelListen: 'tcp://127.0.0.1:7000',
  adminListen: { host: '127.0.0.1', port: 8081 },
  dataDir: './.sluice',
  logLevel: 'info',
} as const;

/** Loads, validates and freezes the controller's configuration. Throws ConfigError naming the key. */
export function loadControllerConfig(input: ControllerConfigInput): ControllerConfig {
  const { flags, env } = input;
  const read = <T>(spec: Flag<keyof ControllerFlags, T>): T | undefined => readFlag(spec, flags, env);
  const path = read(F.config);
  const file = path === undefined ? {} : loadFile(path, input.readFile ?? readUtf8);
  const tunnelListen = read(F.tunnelListen) ?? file.tunnelListen ?? DEFAULTS.tunnelListen;
  checkTls(tunnelListen, file.tunnelCert, file.tunnelKey);
  const store: StoreLocation = read(F.store) ?? file.store ?? { kind: 'sqlite' };
  const config: ControllerConfig = {
    listen: read(F.listen) ?? file.listen ?? DEFAULTS.listen,
    tunnelListen,
    ...(file.tunnelCert === undefined ? {} : { tunnelCert: file.tunnelCert }),
    ...(file.tunnelKey === undefined ? {} : { tunnelKey: file.tunnelKey }),
    // null (off) is a value here, so `??` would not do.
    adminListen: firstDefined(read(F.adminListen), file.adminListen, DEFAULTS.adminListen),
    dataDir: read(F.data) ?? file.dataDir ?? DEFAULTS.dataDir,
    ...adminTokenFrom(env),
    store,
    ...peerFrom(store, read(F.peerListen), read(F.peerAdvertise), env, file),
    ...tlsFrom(read(F.tlsListen), read(F.tlsCert), read(F.tlsKey), file.tls),
    clusters: file.clusters ?? [],
    routes: file.routes ?? [],
    discovery: file.discovery ?? DEFAULT_DISCOVERY,
    tcpRoutes: file.tcpRoutes ?? [],
    tcp: file.tcp ?? resolveTcpLimits(undefined),
    http: file.http ?? DEFAULT_HTTP_OPTIONS,
    tunnel: withGracePeriod(file.tunnel ?? resolveSessionOptions({}, 'tunnel'), read(F.gracePeriod)),
    logLevel: read(F.logLevel) ?? file.logLevel ?? DEFAULTS.logLevel,
    ...input.overrides,
  };
  checkRedirect(config);
  return deepFreeze(maskWhenSerialized(config, maskTokens));
}

/**
 * The public TLS listener: `tls` in the file, and --tls-listen with one more pair from --tls-cert and
 * --tls-key (both or neither). A listener needs a certificate, and a certificate a listener.
 */
function tlsFrom(
  listenSet: HostPort | undefined,
  cert: string | undefined,
  key: string | undefined,
  file: FileSettings['tls'],
): { tls?: TlsConfig } {
  if ((cert === undefined) !== (key === undefined)) {
    const [given, missing] = cert === undefined ? ['tlsKey', 'tlsCert'] : ['tlsCert', 'tlsKey'];
    throw new ConfigError(
      missing,
      `is required with ${given}: pass --tls-cert FILE and --tls-key FILE together`,
    );
  }
  const certs = [...(file?.certs ?? []), ...(cert === undefined ? [] : [{ cert, key: key! }])];
  const listen = listenSet ?? file?.listen;
  if (listen === undefined) {
    if (certs.length === 0 && file?.unknownName === undefined && file?.peekTimeout === undefined) return {};
    throw new ConfigError(
      'tls.listen',
      'is required with TLS certificates: the address of the HTTPS listener (--tls-listen)',
    );
  }
  if (certs.length === 0) {
    throw new ConfigError(
      'tls.certs',
      'needs at least one certificate: tls.certs in the file, or --tls-cert and --tls-key',
    );
  }
  const peekTimeoutMs = file?.peekTimeout ?? DEFAULT_TLS_PEEK_TIMEOUT_MS;
  return { tls: { listen, certs, unknownName: file?.unknownName ?? 'first', peekTimeoutMs } };
}

/**
 * The peer listener and its advertised URL: both required with a Redis store (a fleet), where a
 * controller without a local tunnel for a cluster forwards to a peer that has one; meaningless, and so
 * refused, with the single-controller SQLite store.
 */
function peerFrom(
  store: StoreLocation,
  listenSet: string | undefined,
  advertiseSet: string | undefined,
  env: NodeJS.ProcessEnv,
  file: FileSettings,
): { peer?: PeerConfig } {
  const listen = listenSet ?? file.peerListen;
  const advertise = advertiseSet ?? file.peerAdvertise;
  if (store.kind === 'sqlite') {
    if (listen !== undefined || advertise !== undefined) {
      const key = listen !== undefined ? 'peerListen' : 'peerAdvertise';
      throw new ConfigError(key, 'needs a shared store: set store (--store redis://HOST:PORT) as well');
    }
    return {};
  }
  if (listen === undefined) {
    throw new ConfigError(
      'peerListen',
      'is required with a Redis store: the address peers dial (--peer-listen)',
    );
  }
  if (advertise === undefined) {
    throw new ConfigError(
      'peerAdvertise',
      'is required with a Redis store: the URL peers dial this controller at (--peer-advertise)',
    );
  }
  if (isSecureScheme(parseTransportUrl(listen).scheme)) checkTls(listen, file.tunnelCert, file.tunnelKey);
  const secret = envValue(env, 'SLUICE_PEER_SECRET');
  if (secret !== undefined && !isPlainToken(secret)) {
    throw new ConfigError(
      'peerSecret',
      'must be at least 16 visible ASCII characters without spaces (from $SLUICE_PEER_SECRET; the value is not shown)',
    );
  }
  return { peer: { listen, advertise, ...(secret === undefined ? {} : { secret }) } };
}

const STORE_RULE =
  'must be redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://… for TLS, or ' +
  'redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER[/DB]';

/** A store URL: redis://, rediss://, or the Sentinel form redis+sentinel:// (rediss+sentinel://). */
export function parseStore(value: unknown): StoreLocation | Refusal {
  if (typeof value !== 'string' || value === '') return new Refusal(`${STORE_RULE}, got ${show(value)}`);
  const scheme = /^([a-z+]+):\/\//.exec(value)?.[1];
  if (scheme === 'redis' || scheme === 'rediss') {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return new Refusal(`${STORE_RULE}, got ${show(maskUserinfo(value))}`);
    }
    if (url.hostname === '') return new Refusal(`${STORE_RULE}: the host is missing`);
    const db = url.pathname.replace(/^\//, '');
    if (db !== '' && parseDb(db) === undefined)
      return new Refusal(`has a database ${show(db)}: it must be 0 to 15`);
    return { kind: 'redis', url: value };
  }
  if (scheme === 'redis+sentinel' || scheme === 'rediss+sentinel') {
    const rest = value.slice(scheme.length + 3);
    const at = rest.lastIndexOf('@', rest.indexOf('/') === -1 ? rest.length : rest.indexOf('/'));
    const [hosts = '', name = '', db = '', ...extra] = rest.slice(at + 1).split('/');
    const sentinels: HostPort[] = [];
    for (const part of hosts.split(',')) {
      const hostPort = parseHostPort(part);
      if (hostPort instanceof Refusal)
        return new Refusal(`${STORE_RULE}: Sentinel ${show(part)} ${hostPort.reason}`);
      sentinels.push(hostPort);
    }
    if (name === '' || extra.length > 0) return new Refusal(`${STORE_RULE}: the master name is missing`);
    const number = db === '' ? 0 : parseDb(db);
    if (number === undefined) return new Refusal(`has a database ${show(db)}: it must be 0 to 15`);
    return { kind: 'sentinel', url: value, sentinels, name, db: number, tls: scheme === 'rediss+sentinel' };
  }
  return new Refusal(`${STORE_RULE}, got ${show(maskUserinfo(value))}`);
}

function parseDb(text: string): number | undefined {
  return /^\d{1,2}$/.test(text) && Number(text) <= 15 ? Number(text) : undefined;
}

/** The URL peers dial: an absolute tcp://, tls://, ws:// or wss:// URL with a host other peers can reach. */
function parsePeerAdvertise(value: unknown): string | Refusal {
  if (typeof value !== 'string' || !value.includes('://')) {
    return new Refusal(
      `must be a tcp://, tls://, ws:// or wss:// URL other controllers can dial, got ${show(value)}`,
    );
  }
  try {
    const target = parseTransportUrl(value);
    if (['0.0.0.0', '::', '[::]'].includes(target.host)) {
      return new Refusal(`must name an address peers can dial, not the wildcard ${target.host}`);
    }
    return formatTransportUrl(target);
  } catch (err) {
    if (!(err instanceof SluiceError && err.code === 'SLUICE_ERR_INVALID_URL')) throw err;
    return new Refusal(`is not a usable URL: ${err.message}`, 'SLUICE_ERR_INVALID_URL');
  }
}

function adminTokenFrom(env: NodeJS.ProcessEnv): { adminToken?: string } {
  const token = envValue(env, 'SLUICE_ADMIN_TOKEN');
  if (token === undefined) return {};
  if (!isPlainToken(token)) {
    throw new ConfigError(
      'adminToken',
      'must be at least 16 visible ASCII characters without spaces (from $SLUICE_ADMIN_TOKEN; the value is not shown)',
    );
  }
  return { adminToken: token };
}

function withGracePeriod(tunnel: SessionOptions, gracePeriod: number | undefined): SessionOptions {
  return gracePeriod === undefined ? tunnel : resolveSessionOptions({ ...tunnel, gracePeriod }, 'tunnel');
}

function readUtf8(path: string): string {
  return readFileSync(path, 'utf8');
}

function firstDefined<T>(...values: (T | undefined)[]): T {
  return values.find((v) => v !== undefined) as T;
}

// Plain tokens are secrets; digests are not, and they help to tell which token a cluster holds.
function maskTokens(config: ControllerConfig): ControllerConfig {
  const clusters = config.clusters.map((c) => ({
    ...c,
    tokens: c.tokens.map((t) => (isTokenDigest(t) ? t : MASKED)),
  }));
  const store =
    config.store.kind === 'sqlite' ? config.store : { ...config.store, url: maskUserinfo(config.store.url) };
  const peer = config.peer?.secret === undefined ? config.peer : { ...config.peer, secret: MASKED };
  return {
    ...config,
    clusters,
    store,
    ...(peer === undefined ? {} : { peer }),
    ...(config.adminToken === undefined ? {} : { adminToken: MASKED }),
  };
}

// --- Leaf rules -----------------------------------------------------------------------------------

const parseDir = parseNonEmpty('a directory path');
const parsePath = parseNonEmpty('a file path');

/** host:port (plain TCP) or a tcp://, tls://, ws:// or wss:// URL; normalized to a URL with its port. */
function parseTunnelListen(value: unknown): string | Refusal {
  if (typeof value !== 'string' || value === '') {
    return new Refusal(`must be host:port or a tcp://, tls://, ws:// or wss:// URL, got ${show(value)}`);
  }
  // A bare host:port is the usual spelling (DESIGN.md §5) and means plain TCP.
  const url = value.includes('://') ? value : `tcp://${value}`;
  try {
    return formatTransportUrl(parseTransportUrl(url));
  } catch (err) {
    if (!(err instanceof SluiceError && err.code === 'SLUICE_ERR_INVALID_URL')) throw err;
    return new Refusal(`is not a usable listen address: ${err.message}`, 'SLUICE_ERR_INVALID_URL');
  }
}

function parseClusterName(value: unknown): string | Refusal {
  if (isClusterName(value)) return value;
  return new Refusal(`must be a cluster name: ${CLUSTER_NAME_RULE}, got ${show(value)}`);
}

// One leading `*` label at most, as route hosts: `*.shop.example.test`, never `a.*.test` or `*`.
function parseHostPattern(value: unknown): string | Refusal {
  if (typeof value === 'string') {
    const host = value.endsWith('.') ? value.slice(0, -1) : value;
    const name = host.startsWith('*.') ? host.slice(2) : host;
    if (host.length <= MAX_HOSTNAME && isHostname(name)) return host.toLowerCase();
  }
  return new Refusal(`must be a hostname or *.suffix, got ${show(value)}`);
}

function parseAddress(value: unknown): string | Refusal {
  if (typeof value === 'string' && isAddress(value)) return value.toLowerCase();
  return new Refusal(`must be a hostname or an IP address, got ${show(value)}`);
}

// A token is a secret: the reason never shows the value.
function parseToken(value: unknown): string | Refusal {
  if (typeof value === 'string' && value.startsWith('sha256:')) {
    if (isTokenDigest(value)) return value;
    return new Refusal('must be "sha256:" followed by 64 lowercase hex digits (the value is not shown)');
  }
  if (typeof value === 'string' && isPlainToken(value)) return value;
  return new Refusal(
    'must be "sha256:" followed by 64 lowercase hex digits, or a plain token of at least 16 visible ' +
      'ASCII characters without spaces (the value is not shown)',
  );
}

// Via's received-by is a pseudonym, and a pseudonym is an RFC 9110 token (§7.6.3).
function parseUnknownName(value: unknown): 'first' | 'refuse' | Refusal {
  if (value === 'first' || value === 'refuse') return value;
  return new Refusal(
    `must be first (serve the first certificate) or refuse (end the handshake), got ${show(value)}`,
  );
}

function parseVia(value: unknown): string | Refusal {
  if (typeof value === 'string' && value.length <= 64 && TOKEN.test(value)) return value;
  return new Refusal(`must be an RFC 9110 token of 1 to 64 characters (e.g. sluice), got ${show(value)}`);
}

function parseBoolean(value: unknown): boolean | Refusal {
  if (typeof value === 'boolean') return value;
  return new Refusal(`must be true or false, got ${show(value)}`);
}

/**
 * A path prefix the plain listener keeps routing under http.redirectHttps: an absolute path of visible
 * ASCII, with no query, fragment or dot segment (a request with one is refused before it is matched).
 */
function parseRedirectExclude(value: unknown): string | Refusal {
  const rule = 'must be a path prefix such as /.well-known/acme-challenge/';
  if (typeof value !== 'string' || !value.startsWith('/') || value.length > 256) {
    return new Refusal(`${rule} (a string of 1 to 256 characters starting with /), got ${show(value)}`);
  }
  if (!/^[\x21-\x7e]+$/.test(value) || /[?#]/.test(value)) {
    return new Refusal(`${rule}: visible ASCII, no query (?) or fragment (#), got ${show(value)}`);
  }
  const refused = pathRefusal(value);
  if (refused !== undefined)
    return new Refusal(`${rule}, got ${show(value)}: ${refused.replace(/^the request path /, '')}`);
  return value;
}

const HSTS_KEYS = ['maxAge', 'includeSubDomains', 'preload'] as const;
const DAY_S = 86_400;
/** hstspreload.org takes a site only with a max-age of at least a year and includeSubDomains. */
const PRELOAD_MIN_S = 365 * DAY_S;
const HSTS_MAX_S = 3650 * DAY_S;
const HSTS_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: DAY_S };

/**
 * `http.hsts`: `off` (or false), or `{maxAge, includeSubDomains, preload}`; resolved to the header
 * value. maxAge needs a unit (`180d`): HSTS counts seconds where every other duration here counts
 * milliseconds, and a bare number would be read wrongly one way or the other.
 */
function resolveHsts(value: unknown): string | null {
  if (value === 'off' || value === false) return null;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(
      'http.hsts',
      `must be off or a mapping such as {maxAge: 180d, includeSubDomains: false, preload: false}, got ${show(value)}`,
    );
  }
  const fields = value as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!(HSTS_KEYS as readonly string[]).includes(key)) {
      throw new ConfigError(`http.hsts.${key}`, `is not a known key (known: ${HSTS_KEYS.join(', ')})`);
    }
  }
  if (fields.maxAge === undefined) {
    throw new ConfigError('http.hsts.maxAge', 'is required: how long browsers keep to https, e.g. 180d');
  }
  const maxAge = orThrow(parseMaxAge(fields.maxAge), 'http.hsts.maxAge');
  const flag = (key: 'includeSubDomains' | 'preload'): boolean =>
    fields[key] === undefined ? false : orThrow(parseBoolean(fields[key]), `http.hsts.${key}`);
  const includeSubDomains = flag('includeSubDomains');
  const preload = flag('preload');
  if (preload && (!includeSubDomains || maxAge < PRELOAD_MIN_S)) {
    throw new ConfigError(
      'http.hsts.preload',
      `needs includeSubDomains: true and a maxAge of at least 365d (the preload list takes no less), got includeSubDomains: ${includeSubDomains}, maxAge: ${maxAge}s`,
    );
  }
  return `max-age=${maxAge}${includeSubDomains ? '; includeSubDomains' : ''}${preload ? '; preload' : ''}`;
}

/** Whole seconds from `0`, `90s`, `30m`, `12h` or `180d`, at most 3650d. */
function parseMaxAge(value: unknown): number | Refusal {
  const rule = 'must be a duration with a unit (s, m, h or d) such as 180d, up to 3650d, or 0';
  if (value === 0 || value === '0') return 0;
  const match = typeof value === 'string' ? /^(\d{1,12})(s|m|h|d)$/.exec(value) : null;
  if (match === null) return new Refusal(`${rule}, got ${show(value)}`);
  const seconds = Number(match[1]) * HSTS_UNITS[match[2]!]!;
  return seconds <= HSTS_MAX_S ? seconds : new Refusal(`${rule}, got ${show(value)}`);
}

/** An IP range as `address/prefix`, normalized so; a bare address is a range of one. */
function parseCidr(value: unknown): string | Refusal {
  const rule = 'must be an IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8';
  if (typeof value !== 'string') return new Refusal(`${rule}, got ${show(value)}`);
  const slash = value.indexOf('/');
  const address = slash < 0 ? value : value.slice(0, slash);
  // A zone (`fe80::1%eth0`) names an interface of this host, which a peer's address never carries.
  const family = address.includes('%') ? 0 : isIP(address);
  if (family === 0) return new Refusal(`${rule}, got ${show(value)}`);
  // The edge sees an IPv4 client over an IPv6 socket as the IPv4 address, so a mapped range would
  // never match.
  if (family === 6 && /^::ffff:/i.test(address) && address.includes('.')) {
    const prefix = slash < 0 ? 128 : Number(value.slice(slash + 1));
    const v4 = prefix >= 96 && prefix <= 128 ? `${address.slice(7)}/${prefix - 96}` : address.slice(7);
    return new Refusal(`must write an IPv4-mapped range as IPv4 (${v4}), got ${show(value)}`);
  }
  const bits = family === 4 ? 32 : 128;
  if (slash < 0) return `${address}/${bits}`;
  const prefix = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > bits) {
    return new Refusal(
      `must have a prefix length of 0 to ${bits} for an IPv${family} range, got ${show(value)}`,
    );
  }
  return `${address}/${Number(prefix)}`;
}

// --- The YAML file --------------------------------------------------------------------------------

/** A zod schema for one leaf, checked by a rule shared with flags and environment variables. */
function leaf<T>(parse: (value: unknown) => T | Refusal) {
  return z.unknown().transform((value, ctx) => {
    const result = value === undefined ? new Refusal('is required') : parse(value);
    if (!(result instanceof Refusal)) return result;
    ctx.addIssue({ code: 'custom', message: result.reason });
    return z.NEVER;
  });
}

const httpSchema = z.strictObject({
  responseTimeout: leaf(parseBoundedDuration({ min: 100, max: HOUR })).optional(),
  headersTimeout: leaf(parseBoundedDuration({ min: 100, max: 10 * MINUTE })).optional(),
  requestTimeout: leaf(parseBoundedDuration({ min: 100, max: 24 * HOUR, zeroOff: true })).optional(),
  keepAliveTimeout: leaf(parseBoundedDuration({ min: 100, max: HOUR })).optional(),
  upgradeIdleTimeout: leaf(parseBoundedDuration({ min: 100, max: 7 * 24 * HOUR, zeroOff: true })).optional(),
  bodyIdleTimeout: leaf(parseBoundedDuration({ min: 100, max: HOUR, zeroOff: true })).optional(),
  maxRequestsPerClient: leaf(parseBoundedInteger(0, 1_000_000)).optional(),
  maxHeaderBytes: leaf(parseBoundedInteger(KiB, MiB, formatBytes)).optional(),
  maxHeaders: leaf(parseBoundedInteger(1, 10_000)).optional(),
  via: leaf(parseVia).optional(),
  forwarded: leaf(parseBoolean).optional(),
  trustedProxies: z.array(leaf(parseCidr)).optional(),
  redirectHttps: leaf(parseBoolean).optional(),
  redirectExclude: z.array(leaf(parseRedirectExclude)).max(100).optional(),
  redirectPort: leaf(parseBoundedInteger(0, 65_535)).optional(),
  // Checked by resolveHsts, which names the sub-key at fault.
  hsts: z.unknown().optional(),
});

const tlsSchema = z.strictObject({
  listen: leaf(parseHostPort).optional(),
  certs: z.array(z.strictObject({ cert: leaf(parsePath), key: leaf(parsePath) })).optional(),
  unknownName: leaf(parseUnknownName).optional(),
  peekTimeout: leaf(parseBoundedDuration({ min: 100, max: 5 * MINUTE })).optional(),
});

const clusterSchema = z.strictObject({
  name: leaf(parseClusterName),
  tokens: z.array(leaf(parseToken)).optional(),
  hosts: z.array(leaf(parseHostPattern)).optional(),
});

const discoverySchema = z.strictObject({
  gracePeriod: leaf(parseBoundedDuration({ min: 100, max: 7 * 24 * HOUR })).optional(),
  address: leaf(parseAddress).optional(),
});

const fileSchema = z.strictObject({
  listen: leaf(parseHostPort).optional(),
  tunnelListen: leaf(parseNonEmpty('host:port or a tunnel URL')).optional(),
  adminListen: leaf(parseOptionalHostPort).optional(),
  tunnelCert: leaf(parsePath).optional(),
  tunnelKey: leaf(parsePath).optional(),
  dataDir: leaf(parseDir).optional(),
  store: leaf(parseStore).optional(),
  peerListen: leaf(parseNonEmpty('host:port or a tunnel URL')).optional(),
  peerAdvertise: leaf(parsePeerAdvertise).optional(),
  clusters: z.array(clusterSchema).optional(),
  // Checked by validateRoute, whose messages name the route field.
  routes: z.array(z.unknown()).optional(),
  discovery: discoverySchema.optional(),
  // Checked by tcp-config.ts, whose messages name the field.
  tcpRoutes: z.array(z.unknown()).optional(),
  tcp: z.record(z.string(), z.unknown()).optional(),
  http: httpSchema.optional(),
  tls: tlsSchema.optional(),
  // Checked by resolveSessionOptions, which holds the session options' schema.
  tunnel: z.record(z.string(), z.unknown()).optional(),
  logLevel: leaf(parseLogLevel).optional(),
});

const KNOWN_KEYS = new Map<string, readonly string[]>([
  ['', Object.keys(fileSchema.shape)],
  ['clusters[]', Object.keys(clusterSchema.shape)],
  ['discovery', Object.keys(discoverySchema.shape)],
  ['http', Object.keys(httpSchema.shape)],
  ['tls', Object.keys(tlsSchema.shape)],
  ['tls.certs[]', ['cert', 'key']],
]);

const KINDS: Readonly<Record<string, string>> = {
  array: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  string: 'a string',
  number: 'a number',
};

/** What the file sets, each value checked; absent keys are left for the environment and defaults. */
interface FileSettings {
  listen?: HostPort;
  tunnelListen?: string;
  adminListen?: HostPort | null;
  tunnelCert?: string;
  tunnelKey?: string;
  dataDir?: string;
  store?: StoreLocation;
  peerListen?: string;
  peerAdvertise?: string;
  clusters?: ClusterConfig[];
  routes?: Route[];
  discovery?: DiscoverySettings;
  tcpRoutes?: TcpRoute[];
  tcp?: TcpLimits;
  http?: HttpOptions;
  tls?: { listen?: HostPort; certs?: CertFiles[]; unknownName?: 'first' | 'refuse'; peekTimeout?: number };
  tunnel?: SessionOptions;
  logLevel?: LogLevel;
}

function loadFile(path: string, readFile: (path: string) => string): FileSettings {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    throw new ConfigError('config', `file ${show(path)} cannot be read: ${(err as Error).message}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, lineCounter: lines });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const { line, col } = lines.linePos(syntax.pos[0]);
    const where = `line ${line}, column ${col}`;
    throw new ConfigError('config', `file ${show(path)} is not valid YAML at ${where}: ${syntax.message}`);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError('config', `file ${show(path)} cannot be loaded: ${(err as Error).message}`);
  }
  if (data === null || data === undefined) return {}; // an empty file, or only comments
  if (typeof data !== 'object' || Array.isArray(data)) {
    const rule = 'must hold a mapping of keys such as listen, clusters and routes';
    throw new ConfigError('config', `file ${show(path)} ${rule}, got ${show(data)}`);
  }
  return located(doc, lines, path, () => checkFile(data));
}

function checkFile(data: object): FileSettings {
  const result = fileSchema.safeParse(data);
  if (!result.success) throw issueError(result.error.issues[0]!, data);
  const file = result.data;
  const clusters = file.clusters === undefined ? undefined : checkClusters(file.clusters);
  return {
    listen: file.listen,
    tunnelListen:
      file.tunnelListen === undefined
        ? undefined
        : orThrow(parseTunnelListen(file.tunnelListen), 'tunnelListen'),
    adminListen: file.adminListen,
    tunnelCert: file.tunnelCert,
    tunnelKey: file.tunnelKey,
    dataDir: file.dataDir,
    store: file.store,
    peerListen:
      file.peerListen === undefined ? undefined : orThrow(parseTunnelListen(file.peerListen), 'peerListen'),
    peerAdvertise: file.peerAdvertise,
    clusters,
    routes: file.routes === undefined ? undefined : checkRoutes(file.routes, clusters ?? []),
    discovery:
      file.discovery === undefined
        ? undefined
        : {
            gracePeriodMs: file.discovery.gracePeriod ?? DEFAULT_DISCOVERY.gracePeriodMs,
            ...(file.discovery.address === undefined ? {} : { address: file.discovery.address }),
          },
    tcpRoutes:
      file.tcpRoutes === undefined
        ? undefined
        : checkTcpRoutes(
            file.tcpRoutes,
            (clusters ?? []).map((c) => c.name),
          ),
    tcp: file.tcp === undefined ? undefined : resolveTcpLimits(file.tcp),
    http: file.http === undefined ? undefined : resolveHttp(file.http),
    tls: file.tls,
    tunnel: file.tunnel === undefined ? undefined : resolveTunnel(file.tunnel),
    logLevel: file.logLevel,
  };
}

function issueError(issue: z.core.$ZodIssue, data: unknown): ConfigError {
  if (issue.code === 'unrecognized_keys') {
    const known = KNOWN_KEYS.get(keyOf(issue.path).replace(/\[\d+\]/g, '[]')) ?? [];
    return new ConfigError(
      keyOf([...issue.path, issue.keys[0]!]),
      `is not a known key (known: ${known.join(', ')})`,
    );
  }
  const key = keyOf(issue.path);
  if (issue.code === 'invalid_type') {
    const kind = KINDS[issue.expected] ?? issue.expected;
    return new ConfigError(key, `must be ${kind}, got ${show(valueAt(data, issue.path))}`);
  }
  return new ConfigError(key, issue.message);
}

function checkClusters(
  clusters: readonly { name: string; tokens?: string[] | undefined; hosts?: string[] | undefined }[],
): ClusterConfig[] {
  const names = new Map<string, number>();
  const tokens = new Map<string, string>();
  clusters.forEach((cluster, i) => {
    const first = names.get(cluster.name);
    if (first !== undefined) {
      throw new ConfigError(`clusters[${i}].name`, `repeats clusters[${first}].name ${show(cluster.name)}`);
    }
    names.set(cluster.name, i);
    cluster.tokens?.forEach((token, j) => {
      const key = `clusters[${i}].tokens[${j}]`;
      // A plain token and its digest are the same token; an agent's token must name one cluster.
      const digest = isTokenDigest(token) ? token : hashToken(token);
      const seen = tokens.get(digest);
      if (seen !== undefined)
        throw new ConfigError(key, `is the same token as ${seen} (the value is not shown)`);
      tokens.set(digest, key);
    });
  });
  return clusters.map((c) => ({
    name: c.name,
    tokens: c.tokens ?? [],
    ...(c.hosts === undefined ? {} : { hosts: c.hosts }),
  }));
}

function checkRoutes(input: readonly unknown[], clusters: readonly ClusterConfig[]): Route[] {
  const routes = input.map((route, i) => validateRoute(route, `routes[${i}]`));
  // The table refuses two routes with the same host and path.
  new RouteTable(routes, 'routes');
  const known = clusters.map((c) => c.name);
  routes.forEach((route, i) => {
    if (!known.includes(route.cluster)) {
      const names = known.length > 0 ? known.join(', ') : 'none';
      throw new ConfigError(
        `routes[${i}].cluster`,
        `names no cluster in clusters: ${show(route.cluster)} (known: ${names})`,
      );
    }
  });
  return routes;
}

function resolveHttp(input: z.output<typeof httpSchema>): HttpOptions {
  const d = DEFAULT_HTTP_OPTIONS;
  const http: HttpOptions = {
    responseTimeoutMs: input.responseTimeout ?? d.responseTimeoutMs,
    headersTimeoutMs: input.headersTimeout ?? d.headersTimeoutMs,
    requestTimeoutMs: input.requestTimeout ?? d.requestTimeoutMs,
    keepAliveTimeoutMs: input.keepAliveTimeout ?? d.keepAliveTimeoutMs,
    upgradeIdleTimeoutMs: input.upgradeIdleTimeout ?? d.upgradeIdleTimeoutMs,
    bodyIdleTimeoutMs: input.bodyIdleTimeout ?? d.bodyIdleTimeoutMs,
    maxRequestsPerClient: input.maxRequestsPerClient ?? d.maxRequestsPerClient,
    maxHeaderBytes: input.maxHeaderBytes ?? d.maxHeaderBytes,
    maxHeaders: input.maxHeaders ?? d.maxHeaders,
    via: input.via ?? d.via,
    forwarded: input.forwarded ?? d.forwarded,
    trustedProxies: input.trustedProxies ?? d.trustedProxies,
    redirectHttps: input.redirectHttps ?? d.redirectHttps,
    redirectExclude: input.redirectExclude ?? d.redirectExclude,
    redirectPort: input.redirectPort ?? d.redirectPort,
    hsts: input.hsts === undefined ? d.hsts : resolveHsts(input.hsts),
  };
  // node:http refuses a server whose headers timeout exceeds its request timeout.
  const { headersTimeoutMs: headers, requestTimeoutMs: request } = http;
  if (request !== 0 && headers > request) {
    if (input.headersTimeout !== undefined) {
      throw new ConfigError(
        'http.headersTimeout',
        `must be at most http.requestTimeout (${formatMs(request)})`,
      );
    }
    throw new ConfigError(
      'http.requestTimeout',
      `must be at least http.headersTimeout (${formatMs(headers)}), or 0`,
    );
  }
  return http;
}

const TIME_KEYS = new Set([
  'pingInterval',
  'pingTimeout',
  'writeTimeout',
  'handshakeTimeout',
  'openTimeout',
  'gracePeriod',
]);

/** The `tunnel:` section: duration strings become milliseconds, then the session options' own checks. */
function resolveTunnel(input: Record<string, unknown>): SessionOptions {
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    const ms = TIME_KEYS.has(key) && typeof value === 'string' ? parseDurationMs(value) : value;
    options[key] = orThrow(ms, `tunnel.${key}`);
  }
  return resolveSessionOptions(options as SessionOptionsInput, 'tunnel');
}

// --- Checks across keys ---------------------------------------------------------------------------

/** A redirect to https needs the https listener it sends clients to. */
function checkRedirect(config: ControllerConfig): void {
  if (config.http.redirectHttps && config.tls === undefined) {
    throw new ConfigError(
      'http.redirectHttps',
      'is true, but there is no TLS listener to redirect to: set tls.listen and tls.certs (or --tls-listen, --tls-cert and --tls-key), or set it to false',
    );
  }
}

function checkTls(tunnelListen: string, cert: string | undefined, key: string | undefined): void {
  const { scheme } = parseTransportUrl(tunnelListen);
  if (isSecureScheme(scheme)) {
    const missing = cert === undefined ? 'tunnelCert' : key === undefined ? 'tunnelKey' : undefined;
    if (missing !== undefined) {
      const rule = `is required when tunnelListen is ${tunnelListen}`;
      throw new ConfigError(
        missing,
        `${rule}: set tunnelCert and tunnelKey to PEM file paths in the config file`,
      );
    }
    return;
  }
  // A bare host:port means plain TCP; a certificate next to it suggests TLS was meant.
  const set = cert !== undefined ? 'tunnelCert' : key !== undefined ? 'tunnelKey' : undefined;
  if (set !== undefined) {
    const fix = 'use a tls:// or wss:// tunnelListen to serve TLS, or remove it';
    throw new ConfigError(set, `is set, but tunnelListen ${tunnelListen} is plain ${scheme}://; ${fix}`);
  }
}

// --- Locating a key in the file -------------------------------------------------------------------

/** Runs `check`, adding the file and the line of the key at fault to a ConfigError. */
function located<T>(doc: Document, lines: LineCounter, file: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const line = lineOf(doc, lines, segmentsOf(err.key));
    const where = line === undefined ? file : `${file}:${line}`;
    throw new ConfigError(err.key, `${err.message.slice(err.key.length + 1)} (${where})`, err.code);
  }
}

/** The line of the deepest node on `path` that the document has: the key itself when it is there. */
function lineOf(doc: Document, lines: LineCounter, path: readonly (string | number)[]): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const parent = n === 1 ? doc.contents : doc.getIn(path.slice(0, n - 1), true);
    const segment = String(path[n - 1]);
    let node: unknown;
    if (isMap(parent)) {
      node = parent.items.find(
        (pair) => String(isScalar(pair.key) ? pair.key.value : pair.key) === segment,
      )?.key;
    } else if (isSeq(parent)) {
      node = parent.items[Number(segment)];
    }
    const range = isNode(node) ? node.range : undefined;
    if (range) return lines.linePos(range[0]).line;
  }
  return undefined;
}

/** `routes[2].target` → ['routes', 2, 'target']. */
function segmentsOf(key: string): (string | number)[] {
  return [...key.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] === undefined ? m[1]! : Number(m[2])));
}

/** ['routes', 2, 'target'] → `routes[2].target`. */
function keyOf(path: readonly PropertyKey[]): string {
  return path.reduce<string>((key, s) => {
    if (typeof s === 'number') return `${key}[${s}]`;
    return key === '' ? String(s) : `${key}.${String(s)}`;
  }, '');
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let value = data;
  for (const segment of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

// --- The flags --------------------------------------------------------------------------------------

// `sluice controller`'s flags, each declared once: the usage text, the parseArgs spec and the flags
// object above come from this table (config/flags.ts). Last in the file, after the parsers it names.
const F = {
  config: flag({ name: 'config', key: 'config', value: 'FILE', parse: parsePath, help: 'YAML config file' }),
  listen: flag({
    name: 'listen',
    key: 'listen',
    value: 'ADDR',
    parse: parseHostPort,
    shown: '127.0.0.1:8080',
    help: 'public HTTP host:port',
  }),
  tunnelListen: flag({
    name: 'tunnel-listen',
    key: 'tunnelListen',
    value: 'ADDR',
    parse: parseTunnelListen,
    shown: DEFAULTS.tunnelListen,
    help: 'where agents dial: host:port (plain TCP) or a tcp://, tls://, ws:// or wss:// URL',
  }),
  adminListen: flag({
    name: 'admin-listen',
    key: 'adminListen',
    value: 'ADDR',
    parse: parseOptionalHostPort,
    shown: '127.0.0.1:8081',
    help: 'admin API host:port, or off',
  }),
  data: flag({
    name: 'data',
    key: 'data',
    configKey: 'dataDir',
    value: 'DIR',
    parse: parseDir,
    shown: DEFAULTS.dataDir,
    help: 'data directory (store, admin token)',
  }),
  store: flag({
    name: 'store',
    key: 'store',
    value: 'URL',
    parse: parseStore,
    shown: 'SQLite in --data',
    help:
      'shared store for a fleet: redis://HOST:PORT[/DB], rediss://… or ' +
      'redis+sentinel://HOST:PORT,…/MASTER',
  }),
  peerListen: flag({
    name: 'peer-listen',
    key: 'peerListen',
    value: 'ADDR',
    parse: parseTunnelListen,
    help: 'with --store: where peer controllers dial, as --tunnel-listen',
  }),
  peerAdvertise: flag({
    name: 'peer-advertise',
    key: 'peerAdvertise',
    value: 'URL',
    parse: parsePeerAdvertise,
    help: 'with --store: the URL peers dial this controller at, e.g. tcp://10.0.0.5:7001',
  }),
  tlsListen: flag({
    name: 'tls-listen',
    key: 'tlsListen',
    configKey: 'tls.listen',
    value: 'ADDR',
    parse: parseHostPort,
    help: 'public HTTPS host:port, e.g. 0.0.0.0:8443; off unless set',
  }),
  tlsCert: flag({
    name: 'tls-cert',
    key: 'tlsCert',
    value: 'FILE',
    parse: parsePath,
    help: 'a PEM certificate (chain) for the HTTPS listener, added to tls.certs; with --tls-key',
  }),
  tlsKey: flag({
    name: 'tls-key',
    key: 'tlsKey',
    value: 'FILE',
    parse: parsePath,
    help: 'the PEM private key of --tls-cert',
  }),
  gracePeriod: flag({
    name: 'grace-period',
    key: 'gracePeriod',
    configKey: 'tunnel.gracePeriod',
    value: 'DUR',
    parse: parseFlagDuration({ min: 0, max: HOUR }),
    shown: '30s',
    help: 'on SIGTERM, how long in-flight requests may finish, e.g. 30s; overrides tunnel.gracePeriod',
  }),
  logLevel: LOG_LEVEL_FLAG,
} as const;

export const CONTROLLER_FLAGS = Object.values(F);

/**
 * The controller flags `sluice dev` takes as they are, the same rules; dev adds its own (dev/config.ts),
 * and takes --data with its own help, since dev keeps only its HTTPS certificate there.
 */
export const SHARED_WITH_DEV = {
  listen: F.listen,
  adminListen: F.adminListen,
  data: F.data,
  logLevel: F.logLevel,
} as const;
