// The agent's configuration: defaults < SLUICE_* environment < flags. Validated in one place (STYLE.md
// lesson 6): every failure is a ConfigError naming the key; the result is frozen. The token is a secret:
// no error message carries it, and serializing the config (a log line) masks it.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  deepFreeze,
  envValue,
  type HostPort,
  type LogLevel,
  MASKED,
  maskUserinfo,
  maskWhenSerialized,
  orThrow,
  parseFlagDuration,
  parseNonEmpty,
  parseOptionalHostPort,
  Refusal,
  show,
} from '../config/values.js';
import { flag, type Flag, type FlagValues, LOG_LEVEL_FLAG, readFlag } from '../config/flags.js';
import { ConfigError, SluiceError } from '../errors.js';
import { isPlainToken } from '../syntax.js';
import { formatTransportUrl, parseTransportUrl } from '../transport/url.js';
import { resolveSessionOptions, type SessionOptions } from '../tunnel/options.js';
import { TargetPolicy } from './policy.js';

export interface AgentConfig {
  /**
   * Transport URLs of the controllers' tunnel listeners (tcp://, tls://, ws:// or wss://), at least
   * one: a fleet's members, or one load balancer in front of them. Tunnel slot i starts on URL i mod n
   * and moves to the next URL when its tunnel ends or a dial fails (docs/fleet.md).
   */
  readonly controllers: readonly string[];
  /** The agent token. Never logged. */
  readonly token: string;
  readonly name: string;
  /** Distinguishes replicas of one agent name (defaults to a random id). */
  readonly replica: string;
  /** Tunnels held open, 1..16. */
  readonly tunnels: number;
  /** --allow patterns; empty means the policy's defaults. */
  readonly allow: readonly string[];
  readonly healthListen: HostPort | null;
  /** PEM file path of a CA to trust for tls:// and wss://. */
  readonly ca?: string;
  /** Name the controller's certificate must carry, when it differs from the URL host. */
  readonly servername?: string;
  /** PEM file path of CAs to trust for https:// targets, beside the system roots. */
  readonly targetCa?: string;
  /** Connecting to a target must finish within this, or the stream fails with TARGET_UNREACHABLE. */
  readonly connectTimeoutMs: number;
  /**
   * Connections the agent's pool keeps to one target (host:port) at once; requests beyond it wait in
   * the pool's queue for a free one. Upgraded connections have their own and do not count.
   */
  readonly maxSocketsPerTarget: number;
  /**
   * On a drain, how long upgraded connections (WebSockets) may stay open before the agent closes them
   * with a FIN each way; plain requests get the whole tunnel.gracePeriod. Never more than that.
   */
  readonly upgradeGraceMs: number;
  readonly tunnel: SessionOptions;
  readonly logLevel: LogLevel;
  /** Route discovery from the cluster (`--discover`, docs/kubernetes.md); null when off. */
  readonly discovery: DiscoveryConfig | null;
}

export interface DiscoveryConfig {
  /** The one namespace watched; null: every namespace. */
  readonly namespace: string | null;
  /** A kubeconfig file; absent: the pod's service account, else $KUBECONFIG. */
  readonly kubeconfig?: string;
}

/** The `sluice agent` flags as parsed from argv; each one overrides its SLUICE_* variable. */
export type AgentFlags = FlagValues<typeof AGENT_FLAGS>;

export interface AgentConfigInput {
  flags: AgentFlags;
  env: NodeJS.ProcessEnv;
  /** Settings that replace what the environment and the flags say (`sluice dev`'s own agent). */
  overrides?: Partial<Pick<AgentConfig, 'replica'>>;
}

const DEFAULT_TUNNELS = 2;
const MAX_TUNNELS = 16;
const CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_SOCKETS_PER_TARGET = 256;
const MAX_SOCKETS_PER_TARGET = 100_000;
export const DEFAULT_UPGRADE_GRACE_MS = 5_000;

/** Loads, validates and freezes the agent's configuration. Throws ConfigError naming the key. */
export function loadAgentConfig(input: AgentConfigInput): AgentConfig {
  const { flags, env } = input;
  const read = <T>(spec: Flag<keyof AgentFlags, T>): T | undefined => readFlag(spec, flags, env);
  // Present, not parsed: a bad URL is reported after the token is known, so it can be scrubbed.
  if (flags.controller === undefined && envValue(env, 'SLUICE_CONTROLLER') === undefined) {
    throw new ConfigError('controller', 'is required: pass --controller URL or set SLUICE_CONTROLLER');
  }
  // The token is checked before anything else, so that every later message can be scrubbed of it.
  const token = read(F.token);
  if (token === undefined)
    throw new ConfigError('token', 'is required: pass --token TOKEN or set SLUICE_TOKEN');
  try {
    return build(read, flags, env, token, input.overrides);
  } catch (err) {
    throw scrub(err, token);
  }
}

type Read = <T>(spec: Flag<keyof AgentFlags, T>) => T | undefined;

function build(
  read: Read,
  flags: AgentFlags,
  env: NodeJS.ProcessEnv,
  token: string,
  overrides: AgentConfigInput['overrides'],
): AgentConfig {
  const ca = read(F.ca);
  const servername = read(F.servername);
  const targetCa = read(F.targetCa);
  const config: AgentConfig = {
    controllers: read(F.controller)!,
    token,
    name: read(F.name) ?? orThrow(parseName(hostname()), 'name', 'the host name; pass --name'),
    replica: randomBytes(4).toString('hex'),
    tunnels: read(F.tunnels) ?? DEFAULT_TUNNELS,
    allow: allowPatterns(flags.allow, env),
    healthListen: read(F.healthListen) ?? null,
    ...(ca === undefined ? {} : { ca }),
    ...(servername === undefined ? {} : { servername }),
    ...(targetCa === undefined ? {} : { targetCa }),
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    maxSocketsPerTarget: read(F.maxSocketsPerTarget) ?? DEFAULT_SOCKETS_PER_TARGET,
    upgradeGraceMs: read(F.upgradeGrace) ?? DEFAULT_UPGRADE_GRACE_MS,
    tunnel: tunnelOptions(read),
    logLevel: read(F.logLevel) ?? 'info',
    discovery: discoveryConfig(read),
    ...overrides,
  };
  return deepFreeze(maskWhenSerialized(config, (copy) => ({ ...copy, token: MASKED })));
}

/**
 * The session options the flags set. A ping timeout left unset is three ping intervals, so that
 * `--ping-interval` alone keeps the usual ratio (and never falls below the interval).
 */
function tunnelOptions(read: Read): SessionOptions {
  const pingInterval = read(F.pingInterval);
  const pingTimeout = read(F.pingTimeout) ?? (pingInterval === undefined ? undefined : 3 * pingInterval);
  const gracePeriod = read(F.gracePeriod);
  return resolveSessionOptions(
    {
      ...(pingInterval === undefined ? {} : { pingInterval }),
      ...(pingTimeout === undefined ? {} : { pingTimeout }),
      ...(gracePeriod === undefined ? {} : { gracePeriod }),
    },
    'tunnel',
  );
}

/** --discover and the two flags that only make sense with it. */
function discoveryConfig(read: Read): DiscoveryConfig | null {
  const namespace = read(F.discoverNamespace);
  const kubeconfig = read(F.kubeconfig);
  if (read(F.discover) !== true) {
    const stray =
      namespace !== undefined ? 'discoverNamespace' : kubeconfig !== undefined ? 'kubeconfig' : undefined;
    if (stray !== undefined)
      throw new ConfigError(stray, 'applies only with --discover (or SLUICE_DISCOVER=true)');
    return null;
  }
  return { namespace: namespace ?? null, ...(kubeconfig === undefined ? {} : { kubeconfig }) };
}

// A boolean flag comes from argv as true; its variable as text.
function parseDiscover(value: unknown): boolean | Refusal {
  if (value === true || value === 'true' || value === '1') return true;
  if (value === false || value === 'false' || value === '0') return false;
  return new Refusal(`must be true or false, got ${show(value)}`);
}

// A namespace name is an RFC 1123 label.
function parseNamespace(value: unknown): string | Refusal {
  if (typeof value === 'string' && /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(value)) return value;
  return new Refusal(
    `must be a namespace name (1 to 63 lowercase letters, digits and hyphens), got ${show(value)}`,
  );
}

// A valid token is at least 16 characters, so replacing it cannot mangle the rest of a message. Only the
// controller URL could carry it (a query string), but every message passes through here.
function scrub(err: unknown, token: string): unknown {
  if (!(err instanceof ConfigError) || !err.message.includes(token)) return err;
  const reason = err.message.slice(err.key.length + 1).replaceAll(token, MASKED);
  return new ConfigError(err.key, reason, err.code);
}

// Never echo the value: say what is wrong with it.
function parseToken(value: unknown): string | Refusal {
  if (typeof value !== 'string') return new Refusal('must be a string (the value is not shown)');
  if (isPlainToken(value)) {
    if (!value.startsWith('sha256:')) return value;
    return new Refusal('is a digest (sha256:...); the agent needs the plain token it was made from');
  }
  if (value.trim() !== value) {
    const hint = 'such as the newline a secret file often ends with';
    return new Refusal(`has leading or trailing whitespace, ${hint} (the value is not shown)`);
  }
  return new Refusal('must be at least 16 visible ASCII characters, without spaces (the value is not shown)');
}

const SCHEMES = 'a tcp://, tls://, ws:// or wss:// URL, e.g. tls://sluice.example.com:7000';

/** At most this many --controller URLs: more than the tunnels an agent can hold is no use. */
const MAX_CONTROLLERS = 16;

/** One or more controller URLs, comma-separated (the flag's repeats are joined so). */
function parseControllerUrls(value: unknown): string[] | Refusal {
  if (typeof value !== 'string') return new Refusal(`must be ${SCHEMES}, got ${show(value)}`);
  const urls: string[] = [];
  for (const [i, part] of value.split(',').entries()) {
    const url = parseControllerUrl(part.trim());
    if (url instanceof Refusal) {
      if (!value.includes(',')) return url;
      return new Refusal(`URL ${i + 1} ${url.reason}`, url.code);
    }
    if (urls.includes(url)) return new Refusal(`names ${show(maskUserinfo(url))} twice`);
    urls.push(url);
  }
  if (urls.length > MAX_CONTROLLERS) {
    return new Refusal(`may name at most ${MAX_CONTROLLERS} URLs, got ${urls.length}`);
  }
  return urls;
}

function parseControllerUrl(value: unknown): string | Refusal {
  if (typeof value !== 'string' || !value.includes('://')) {
    return new Refusal(
      `must be ${SCHEMES}, got ${show(typeof value === 'string' ? maskUserinfo(value) : value)}`,
    );
  }
  try {
    const target = parseTransportUrl(value);
    if (target.port === 0) return new Refusal(`must name a port other than 0, got ${show(value)}`);
    return formatTransportUrl(target);
  } catch (err) {
    if (!(err instanceof SluiceError && err.code === 'SLUICE_ERR_INVALID_URL')) throw err;
    return new Refusal(`is not usable: ${err.message}`, 'SLUICE_ERR_INVALID_URL');
  }
}

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;

function parseName(value: unknown): string | Refusal {
  if (typeof value === 'string' && NAME.test(value)) return value;
  const rule =
    '1 to 253 letters, digits, dots, hyphens or underscores, starting and ending with a letter or digit';
  return new Refusal(`must be ${rule}, got ${show(value)}`);
}

function parseTunnels(value: unknown): number | Refusal {
  const n = typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (n >= 1 && n <= MAX_TUNNELS) return n;
  return new Refusal(`must be an integer from 1 to ${MAX_TUNNELS}, got ${show(value)}`);
}

function parseSocketsPerTarget(value: unknown): number | Refusal {
  const n = typeof value === 'string' && /^\d{1,6}$/.test(value) ? Number(value) : NaN;
  if (n >= 1 && n <= MAX_SOCKETS_PER_TARGET) return n;
  return new Refusal(`must be an integer from 1 to ${MAX_SOCKETS_PER_TARGET}, got ${show(value)}`);
}

/** --allow (repeatable) wins over SLUICE_ALLOW (comma-separated); none means the policy's defaults. */
function allowPatterns(given: string | readonly string[] | undefined, env: NodeJS.ProcessEnv): string[] {
  const flag = typeof given === 'string' ? [given] : given;
  const fromFlags = flag !== undefined && flag.length > 0;
  const patterns = fromFlags
    ? [...flag]
    : (envValue(env, 'SLUICE_ALLOW')
        ?.split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '') ?? []);
  try {
    new TargetPolicy(patterns, 'allow');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const source = fromFlags ? '--allow' : 'SLUICE_ALLOW';
    throw new ConfigError(err.key, `${err.message.slice(err.key.length + 1)} (from ${source})`, err.code);
  }
  return patterns;
}

// --- The flags --------------------------------------------------------------------------------------

// `sluice agent`'s flags, each declared once: the usage text, the parseArgs spec and the flags object
// come from this table (config/flags.ts). Last in the file, after the parsers it names.
const F = {
  controller: flag({
    name: 'controller',
    key: 'controller',
    value: 'URL',
    multiple: true,
    parse: parseControllerUrls,
    required: true,
    help:
      "the controller's tunnel listener: tcp://, tls://, ws:// or wss://; repeatable for the members " +
      'of a fleet, each tunnel on its own, moving to the next when one goes; the variable is comma-separated',
  }),
  token: flag({
    name: 'token',
    key: 'token',
    value: 'TOKEN',
    parse: parseToken,
    required: true,
    help: 'the agent token',
  }),
  name: flag({
    name: 'name',
    key: 'name',
    value: 'NAME',
    parse: parseName,
    shown: 'the host name',
    help: 'agent name',
  }),
  tunnels: flag({
    name: 'tunnels',
    key: 'tunnels',
    value: 'N',
    parse: parseTunnels,
    shown: String(DEFAULT_TUNNELS),
    help: `tunnels to hold open, 1 to ${MAX_TUNNELS}`,
  }),
  allow: flag({
    name: 'allow',
    key: 'allow',
    value: 'PATTERN',
    multiple: true,
    shown: '*.svc.cluster.local:*, *.svc:*',
    help:
      "a target the agent may dial, host:port with * wildcards; repeatable, e.g. --allow '*.svc.cluster.local:*' " +
      '--allow 127.0.0.1:3000; the variable is comma-separated',
  }),
  healthListen: flag({
    name: 'health-listen',
    key: 'healthListen',
    value: 'ADDR',
    parse: parseOptionalHostPort,
    shown: 'off',
    help: 'host:port for /healthz, /readyz and /metrics',
  }),
  ca: flag({
    name: 'ca',
    key: 'ca',
    value: 'FILE',
    parse: parseNonEmpty('a PEM file path'),
    help: 'PEM CA to trust for tls:// and wss://',
  }),
  servername: flag({
    name: 'servername',
    key: 'servername',
    value: 'NAME',
    parse: parseNonEmpty('a host name'),
    help: "name the controller's certificate must carry",
  }),
  targetCa: flag({
    name: 'target-ca',
    key: 'targetCa',
    value: 'FILE',
    parse: parseNonEmpty('a PEM file path'),
    shown: 'system roots only',
    help: 'PEM CAs to trust for https:// targets, beside the system roots',
  }),
  gracePeriod: flag({
    name: 'grace-period',
    key: 'gracePeriod',
    configKey: 'tunnel.gracePeriod',
    value: 'DUR',
    parse: parseFlagDuration({ min: 0, max: 60 * 60_000 }),
    shown: '30s',
    help: 'on SIGTERM, how long in-flight streams may finish',
  }),
  upgradeGrace: flag({
    name: 'upgrade-grace',
    key: 'upgradeGrace',
    value: 'DUR',
    parse: parseFlagDuration({ min: 0, max: 60 * 60_000 }),
    shown: '5s',
    help: 'on SIGTERM, how long upgraded connections (WebSockets) stay open before they are closed, at most the grace period',
  }),
  maxSocketsPerTarget: flag({
    name: 'max-sockets-per-target',
    key: 'maxSocketsPerTarget',
    value: 'N',
    parse: parseSocketsPerTarget,
    shown: String(DEFAULT_SOCKETS_PER_TARGET),
    help: 'connections to one target at once; more requests wait for a free one',
  }),
  pingInterval: flag({
    name: 'ping-interval',
    key: 'pingInterval',
    configKey: 'tunnel.pingInterval',
    value: 'DUR',
    parse: parseFlagDuration({ min: 100, max: 5 * 60_000 }),
    shown: '15s',
    help: 'how often each tunnel is pinged',
  }),
  pingTimeout: flag({
    name: 'ping-timeout',
    key: 'pingTimeout',
    configKey: 'tunnel.pingTimeout',
    value: 'DUR',
    parse: parseFlagDuration({ min: 100, max: 30 * 60_000 }),
    shown: '3 ping intervals',
    help: 'silence after which a tunnel is dead and redialed',
  }),
  discover: flag({
    name: 'discover',
    key: 'discover',
    parse: parseDiscover,
    shown: 'off',
    help:
      'routes from the cluster: Ingresses of class sluice and Services annotated sluice.dev/host ' +
      '(docs/kubernetes.md); the variable is true or false',
  }),
  discoverNamespace: flag({
    name: 'discover-namespace',
    key: 'discoverNamespace',
    value: 'NS',
    parse: parseNamespace,
    shown: 'every namespace',
    help: 'with --discover, watch this namespace only',
  }),
  kubeconfig: flag({
    name: 'kubeconfig',
    key: 'kubeconfig',
    value: 'FILE',
    parse: parseNonEmpty('a kubeconfig file path'),
    shown: "the pod's service account, else $KUBECONFIG",
    help: 'with --discover, the kubeconfig to reach the API server with',
  }),
  logLevel: LOG_LEVEL_FLAG,
} as const;

export const AGENT_FLAGS = Object.values(F);
