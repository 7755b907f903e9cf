// Leaf values shared by the controller, agent and dev configurations: host:port addresses, durations,
// log levels. Each parser returns the value or a Refusal that says what is wrong, so one rule serves a
// YAML key, a flag and an environment variable alike, and the caller names the key and the source.
import { isIPv4, isIPv6 } from 'node:net';
import { ConfigError, type SluiceErrorCode } from '../errors.js';
import { isHostname } from '../syntax.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Why a value was refused, worded to follow its key: `listen` + ` must be host:port ...`. */
export class Refusal {
  constructor(
    readonly reason: string,
    readonly code: SluiceErrorCode = 'SLUICE_ERR_INVALID_OPTION',
  ) {}
}

/** The value, or a ConfigError for `key`; `source` (a flag or variable name) is added to the message. */
export function orThrow<T>(result: T | Refusal, key: string, source?: string): T {
  if (!(result instanceof Refusal)) return result;
  throw new ConfigError(
    key,
    source === undefined ? result.reason : `${result.reason} (from ${source})`,
    result.code,
  );
}

/** An environment variable's value; set but empty counts as unset, as shells and manifests leave them. */
export function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

/** A value for an error message. Only for values that are not secrets. */
export function show(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 200 ? `${value.slice(0, 200)}…` : value);
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object' && value !== null) return 'a mapping';
  return String(value);
}

const PORT = /^\d{1,5}$/;
const HOST_PORT_RULE = 'must be host:port (e.g. 127.0.0.1:8080 or [::1]:8080; port 0 picks a free port)';

/** `host:port` or `[v6]:port` to listen on; port 0 is allowed. The host comes back without brackets. */
export function parseHostPort(value: unknown): HostPort | Refusal {
  const refusal = new Refusal(`${HOST_PORT_RULE}, got ${show(value)}`);
  if (typeof value !== 'string') return refusal;
  const colon = value.lastIndexOf(':');
  if (colon === -1) return refusal;
  const host = value.slice(0, colon);
  const port = value.slice(colon + 1);
  if (!PORT.test(port) || Number(port) > 65535) return refusal;
  if (host.startsWith('[') && host.endsWith(']')) {
    const ip = host.slice(1, -1);
    return isIPv6(ip) ? { host: ip, port: Number(port) } : refusal;
  }
  const valid = isIPv4(host) || isHostname(host);
  return valid ? { host, port: Number(port) } : refusal;
}

/**
 * The http:// URL of a listener bound to `host` and `port`, for readiness lines and handles: an IPv6
 * host is bracketed (RFC 3986 §3.2.2), so that `new URL()` and clients read it back as it was bound.
 */
export function listenerUrl(host: string, port: number): string {
  return `http://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** A listener that may be turned off: host:port, or `off`/`none` for null. */
export function parseOptionalHostPort(value: unknown): HostPort | null | Refusal {
  if (typeof value === 'string' && /^(?:off|none)$/i.test(value)) return null;
  const parsed = parseHostPort(value);
  return parsed instanceof Refusal ? new Refusal(`${HOST_PORT_RULE} or "off", got ${show(value)}`) : parsed;
}

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parseLogLevel(value: unknown): LogLevel | Refusal {
  // Environment variables are often written in capitals (LOG_LEVEL=INFO); the meaning is the same.
  const level = typeof value === 'string' ? value.toLowerCase() : value;
  return (
    LOG_LEVELS.find((l) => l === level) ??
    new Refusal(`must be one of ${LOG_LEVELS.join(', ')}, got ${show(value)}`)
  );
}

/** A non-empty string, such as a file or directory path. */
export function parseNonEmpty(what: string): (value: unknown) => string | Refusal {
  return (value) =>
    typeof value === 'string' && value !== '' ? value : new Refusal(`must be ${what}, got ${show(value)}`);
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const UNITS: Readonly<Record<string, number>> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const DURATION_RULE =
  'must be a duration: a number of milliseconds, or a string such as "500ms", "60s", "5m", "1h"';

/** A duration in milliseconds: a whole number, or a string with a unit. No bounds. */
export function parseDurationMs(value: unknown): number | Refusal {
  const refusal = new Refusal(`${DURATION_RULE}, got ${show(value)}`);
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : refusal;
  const match = typeof value === 'string' ? DURATION.exec(value) : null;
  if (match === null) return refusal;
  const exact = Number(match[1]) * UNITS[match[2]!]!;
  const ms = Math.round(exact);
  // `1.5s` is 1500 ms; `0.5ms` is no whole number of milliseconds.
  return Math.abs(exact - ms) < 1e-6 && Number.isSafeInteger(ms) ? ms : refusal;
}

export interface DurationBounds {
  min: number;
  max: number;
  /** 0 is also accepted, meaning the limit is off. */
  zeroOff?: boolean;
}

export function parseBoundedDuration(bounds: DurationBounds): (value: unknown) => number | Refusal {
  return (value) => {
    const ms = parseDurationMs(value);
    if (ms instanceof Refusal || (ms === 0 && bounds.zeroOff === true)) return ms;
    if (ms >= bounds.min && ms <= bounds.max) return ms;
    const off = bounds.zeroOff === true ? ', or 0 to turn it off' : '';
    return new Refusal(
      `must be between ${formatMs(bounds.min)} and ${formatMs(bounds.max)}${off}, got ${show(value)}`,
    );
  };
}

/**
 * A duration given as a flag or variable, where every value is a string: bare digits are milliseconds,
 * as a number is in YAML (`--grace-period 0`, `SLUICE_GRACE_PERIOD=30000`).
 */
export function parseFlagDuration(bounds: DurationBounds): (value: unknown) => number | Refusal {
  const parse = parseBoundedDuration(bounds);
  return (value) => parse(typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : value);
}

export function parseBoundedInteger(
  min: number,
  max: number,
  format: (n: number) => string = String,
): (value: unknown) => number | Refusal {
  return (value) =>
    typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
      ? value
      : new Refusal(`must be an integer between ${format(min)} and ${format(max)}, got ${show(value)}`);
}

/** A duration for a message, in the largest unit that divides it: `1h`, `90s`, `1500ms`. */
export function formatMs(ms: number): string {
  if (ms >= HOUR && ms % HOUR === 0) return `${ms / HOUR}h`;
  if (ms >= MINUTE && ms % MINUTE === 0) return `${ms / MINUTE}m`;
  if (ms >= SECOND && ms % SECOND === 0) return `${ms / SECOND}s`;
  return `${ms}ms`;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** A size for a message, in the largest binary unit that divides it: `64 KiB`, `1 MiB`, `1000`. */
export function formatBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return String(n);
}

/** Freezes `value` and everything reachable from it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/**
 * Gives `config` a non-enumerable toJSON that replaces secrets, so that logging or serializing the
 * config (pino calls toJSON) cannot leak them. Spreading the config still copies the real values.
 */
export function maskWhenSerialized<T extends object>(config: T, mask: (copy: T) => T): T {
  Object.defineProperty(config, 'toJSON', { value: () => mask({ ...config }), enumerable: false });
  return config;
}

export const MASKED = '***';

/**
 * `value` with the userinfo of the URL it holds (`user:password@`) replaced by MASKED, for messages and
 * logs; also for a string that no URL parser accepts, and for a bare `user@host`.
 */
export function maskUserinfo(value: string): string {
  return value.replace(/(^|\/\/)[^/?#]*@/, `$1${MASKED}@`);
}

/**
 * The value of flag `--name` if given, else of SLUICE_NAME (name upper-cased, dashes as underscores),
 * parsed for config key `key`; undefined when neither is set. An error names the key and the source.
 */
export function flagOrEnv<T>(
  key: string,
  name: string,
  parse: (value: unknown) => T | Refusal,
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
): T | undefined {
  if (flag !== undefined) return orThrow(parse(flag), key, `--${name}`);
  const variable = `SLUICE_${name.toUpperCase().replaceAll('-', '_')}`;
  const value = envValue(env, variable);
  return value === undefined ? undefined : orThrow(parse(value), key, variable);
}
