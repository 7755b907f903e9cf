// The agent's target policy (DESIGN §4 Policy): which host:port a stream may make the agent dial. The
// controller is not trusted here. A compromised controller must not turn the agent into a proxy for
// cloud credentials (instance metadata) or for the Kubernetes API with the pod's service account token.
// Pure: no I/O, no DNS.
//
// Patterns come from `--allow host:port`, with `*` wildcards:
// - `*.svc.cluster.local` matches one or more whole labels in front of the suffix, never the suffix
//   itself and never an IP address;
// - `*` alone matches every host, IP addresses included. It opens the agent to everything it can reach
//   on the node's network: a last resort for development, not for a cluster;
// - an exact host, an IPv4 address or a bracketed IPv6 address (`[::1]:8080`) matches only itself;
// - the port is a number from 1 to 65535, or `*` for any of them.
//
// Protected targets (cloud metadata, link-local addresses, the Kubernetes API) are refused even when a
// wildcard matches them. So is the agent's own host: loopback, the unspecified address (0.0.0.0 and ::
// connect to the local host) and `localhost` names. Only a pattern that names the host exactly lets the
// agent dial one of these.
//
// DNS: the policy sees names, and a name can resolve to a protected address (an ExternalName Service, a
// DNS record an attacker controls). The dialer must check every resolved address before connecting:
// with forbidsWildcardAddress when the check result says `viaWildcard`, else with forbidsAddress unless
// it says `exempt`. It must also dial the host and port the check returns rather than parse the target
// again, so that both read the URL the same way.
import { BlockList, isIP, isIPv4, isIPv6 } from 'node:net';
import { maskUserinfo } from '../config/values.js';
import { ConfigError } from '../errors.js';
import { isInClusterHostname } from '../syntax.js';
import type { TargetCheck, TargetScheme, TargetVerdict } from './deliver-types.js';

/**
 * The patterns used when none are given: namespace-qualified Service names only. A bare `web` or
 * `web.shop` relies on the resolver's search path and may name something outside the cluster (`.shop` is
 * a public top-level domain), while `.svc` is not delegated on the Internet. Loopback ports are allowed
 * only by an explicit `--allow 127.0.0.1:PORT`.
 */
export const DEFAULT_ALLOW: readonly string[] = Object.freeze(['*.svc.cluster.local:*', '*.svc:*']);

export type PolicyResult = TargetVerdict;

export interface AllowPattern {
  /** `any` is `*`; `suffix` is `*.suffix`; `exact` names one host or IP address. */
  kind: 'any' | 'suffix' | 'exact';
  /** Lowercase, without a trailing dot; the suffix without `*.`; IPv6 canonical and unbracketed. */
  host: string;
  port: number | '*';
  /** The pattern as written, for logs. */
  source: string;
}

const PORT = /^[1-9]\d{0,4}$/;
const MAX_REASON_INPUT = 200;
const MAX_CACHED_VERDICTS = 4096;

// Instance metadata services hand out cloud credentials: AWS, GCP, Azure and most others answer on
// 169.254.169.254; AWS also on fd00:ec2::254 (IPv6 IMDS); Alibaba on 100.100.100.200; Azure's WireServer
// (168.63.129.16) serves VM extension settings.
const METADATA_NAMES = new Set(['metadata.google.internal']);
const METADATA = blockList(
  ['169.254.169.254/32', '100.100.100.200/32', '168.63.129.16/32'],
  ['fd00:ec2::254/128'],
);
// Link-local addresses (RFC 3927, RFC 4291 §2.5.6) reach the node's own network plumbing, and other
// clouds' metadata services live there (e.g. 169.254.170.2, ECS task credentials).
const LINK_LOCAL = blockList(['169.254.0.0/16'], ['fe80::/10']);
// The agent's own host (RFC 1122 §3.2.1.3, RFC 4291 §2.5.2-3): a connect to 0.0.0.0 or :: reaches it
// too. Its health listener and whatever else binds loopback (a sidecar's admin port) live here.
const LOOPBACK = blockList(['127.0.0.0/8'], ['::1/128']);
const UNSPECIFIED = blockList(['0.0.0.0/8'], ['::/128']);

/** Parses one `--allow` pattern; `key` names it in the error (e.g. `agent.allow[1]`). */
export function parseAllowPattern(p: string, key: string): AllowPattern {
  const colon = typeof p === 'string' ? p.lastIndexOf(':') : -1;
  const host = colon === -1 ? undefined : patternHost(p.slice(0, colon));
  const port = colon === -1 ? undefined : patternPort(p.slice(colon + 1));
  if (host === undefined || port === undefined) {
    const shown = JSON.stringify(p) ?? String(p);
    throw new ConfigError(key, `must be host:port with * wildcards, got ${shown}`);
  }
  return { ...host, port, source: p };
}

/**
 * Whether a resolved address is protected (cloud metadata or link-local), for the dialer's check after
 * DNS. IPv4-mapped IPv6 (`::ffff:169.254.169.254`) and NAT64 (`64:ff9b::a9fe:a9fe`) forms count too.
 * Not an IP address: false.
 */
export function isForbiddenAddress(ip: string): boolean {
  return addressKind(ip) !== undefined;
}

/** Whether a resolved address is the local host: loopback or unspecified, in any IPv6 form of them. */
export function isLocalAddress(ip: string): boolean {
  return localKind(ip) !== undefined;
}

export interface PolicyOptions {
  /**
   * Addresses of the Kubernetes API as this pod sees it (the `KUBERNETES_SERVICE_HOST` ClusterIP),
   * protected like the `kubernetes.default` names: a wildcard over IP addresses must not reach it.
   */
  kubernetesApi?: readonly string[];
}

/** The Kubernetes API addresses the environment announces to a pod (empty outside Kubernetes). */
export function kubernetesApiFromEnv(env: NodeJS.ProcessEnv): string[] {
  const host = env.KUBERNETES_SERVICE_HOST?.trim() ?? '';
  return isIP(host) !== 0 ? [host] : [];
}

export class TargetPolicy implements TargetCheck {
  readonly #patterns: readonly AllowPattern[];
  readonly #kubernetesApi: BlockList;
  readonly #verdicts = new Map<string, PolicyResult>();
  /** `host:port` targets allowed beside the patterns: the discovered Services (setDiscovered). */
  #discovered: ReadonlySet<string> = new Set();

  /** No patterns means DEFAULT_ALLOW. Throws ConfigError naming `${key}[i]` for a bad pattern. */
  constructor(patterns: readonly string[], key = 'agent.allow', options: PolicyOptions = {}) {
    const sources = patterns.length > 0 ? patterns : DEFAULT_ALLOW;
    this.#patterns = sources.map((p, i) => parseAllowPattern(p, `${key}[${i}]`));
    const api = options.kubernetesApi ?? [];
    this.#kubernetesApi = blockList(
      api.filter((ip) => isIPv4(ip)).map((ip) => `${ip}/32`),
      api.filter((ip) => isIPv6(ip)).map((ip) => `${ip}/128`),
    );
  }

  /**
   * Whether a resolved address is protected: cloud metadata, link-local, or the Kubernetes API given
   * to the constructor. For the dialer's check after DNS.
   */
  forbidsAddress(ip: string): boolean {
    return this.#addressKind(ip) !== undefined;
  }

  /**
   * Whether a name that only a wildcard allowed may not connect to this resolved address: the
   * protected ones, the local host, and anything that is no IP address (fail closed).
   */
  forbidsWildcardAddress(ip: string): boolean {
    return isIP(ip) === 0 || isLocalAddress(ip) || this.forbidsAddress(ip);
  }

  #addressKind(ip: string): string | undefined {
    const kind = addressKind(ip);
    if (kind !== undefined) return kind;
    const family = isIP(ip);
    if (family === 0) return undefined;
    return this.#kubernetesApi.check(ip, family === 4 ? 'ipv4' : 'ipv6') ? 'the Kubernetes API' : undefined;
  }

  /**
   * Widens the policy by exactly these `host:port` targets, in place of the set given before: the
   * Services that route discovery found (agent/discovery.ts). Each counts as a wildcard's match, never
   * as an exact pattern: whoever may write an Ingress is not the operator who wrote --allow, so the
   * protected and local addresses stay refused, by name and after DNS.
   */
  setDiscovered(targets: readonly string[]): void {
    const next = new Set<string>();
    for (const [i, target] of targets.entries()) {
      const p = parseAllowPattern(target, `discovered[${i}]`);
      if (p.kind !== 'exact' || p.port === '*' || !isDnsName(p.host)) {
        throw new ConfigError(`discovered[${i}]`, `must be a host name and port, got ${quote(target)}`);
      }
      next.add(`${p.host}:${p.port}`);
    }
    this.#discovered = next;
    this.#verdicts.clear();
  }

  /** The patterns in force, as written. */
  get patterns(): readonly string[] {
    return this.#patterns.map((p) => p.source);
  }

  /** Whether the agent may dial `target` (`http://host[:port]`, `tcp://host:port`, …); a refusal says why. */
  check(target: string): PolicyResult {
    // A few routes send every request to the same targets: remember the verdicts, within a bound.
    let result = this.#verdicts.get(target);
    if (result === undefined) {
      result = Object.freeze(this.#check(target));
      if (this.#verdicts.size >= MAX_CACHED_VERDICTS) this.#verdicts.clear();
      this.#verdicts.set(target, result);
    }
    return result;
  }

  #check(target: string): PolicyResult {
    const parsed = parseTarget(target);
    if ('reason' in parsed) return { ok: false, reason: parsed.reason };
    const { scheme, host, key, port } = parsed;
    const matching = this.#patterns.filter((p) => hostMatches(p, key) && (p.port === '*' || p.port === port));
    const kind = protectedKind(key) ?? this.#addressKind(key);
    if (matching.some((p) => p.kind === 'exact')) {
      return { ok: true, scheme, host, port, exempt: kind !== undefined, viaWildcard: false };
    }
    const shown = `${scheme}://${hostPort(key, port)}`;
    const hint = `allow it explicitly with --allow ${hostPort(key, port)}`;
    if (kind !== undefined) return { ok: false, reason: `target ${shown} is ${kind}; ${hint}` };
    if (matching.length === 0 && !this.#discovered.has(`${key}:${port}`)) {
      return {
        ok: false,
        reason: `target ${shown} matches no --allow pattern (${this.patterns.join(', ')})`,
      };
    }
    const local = localKind(key) ?? localName(key);
    if (local !== undefined) return { ok: false, reason: `target ${shown} is ${local}; ${hint}` };
    return { ok: true, scheme, host, port, exempt: false, viaWildcard: true };
  }
}

function patternHost(host: string): Pick<AllowPattern, 'kind' | 'host'> | undefined {
  if (host === '*') return { kind: 'any', host: '*' };
  if (host.startsWith('[') && host.endsWith(']')) {
    const ip = host.slice(1, -1);
    // A zone (`fe80::1%eth0`) has no place in a URL host, so no target could ever match it.
    const canonical = isIPv6(ip) && !ip.includes('%') ? canonicalIPv6(ip) : undefined;
    return canonical === undefined ? undefined : { kind: 'exact', host: canonical };
  }
  if (isIPv4(host)) return { kind: 'exact', host };
  const suffix = host.startsWith('*.');
  const name = stripDot(suffix ? host.slice(2) : host);
  if (!isDnsName(name)) return undefined;
  return { kind: suffix ? 'suffix' : 'exact', host: name.toLowerCase() };
}

function patternPort(port: string): number | '*' | undefined {
  if (port === '*') return '*';
  return PORT.test(port) && Number(port) <= 65535 ? Number(port) : undefined;
}

function hostMatches(pattern: AllowPattern, key: string): boolean {
  switch (pattern.kind) {
    case 'any':
      return true;
    case 'exact':
      return key === pattern.host;
    case 'suffix':
      // isDnsName refuses a numeric last label, so a suffix can never match an IP address.
      return key.length > pattern.host.length + 1 && key.endsWith(`.${pattern.host}`);
  }
}

interface Target {
  scheme: TargetScheme;
  host: string;
  /** The host as patterns see it: no trailing dot, IPv6 unbracketed. */
  key: string;
  port: number;
}

// The WHATWG URL parser canonicalizes the address spellings used to slip past filters (`0xa9fe.0xa9fe`,
// `2852039166`, `[::ffff:169.254.169.254]`), so the checks below see one form of each address.
function parseTarget(target: string): Target | { reason: string } {
  let url: URL;
  // h2c is no special scheme to the WHATWG parser, which would keep its host as written: its authority
  // is read as http's, so that every scheme's host is canonicalized the same way.
  const scheme = /^(https?|h2c|tcp):\/\//i.exec(target)?.[1]?.toLowerCase() as TargetScheme | undefined;
  try {
    url = new URL(scheme === undefined ? target : `http${target.slice(scheme.length)}`);
  } catch {
    // Best effort for a string the URL parser refused: hide what looks like userinfo.
    return { reason: `target ${quote(maskUserinfo(target))} is not a URL` };
  }
  if (url.username !== '' || url.password !== '') {
    const shownScheme = scheme === undefined ? url.protocol : `${scheme}:`;
    return { reason: `target ${quote(`${shownScheme}//${url.host}`)} must not carry credentials` };
  }
  const shown = quote(target);
  if (scheme === undefined)
    return { reason: `target ${shown} must be an http://, https://, h2c:// or tcp:// URL` };
  // A raw TCP target has no default port, and nothing after host:port means anything to it.
  if (scheme === 'tcp' && url.port === '') return { reason: `target ${shown} must name a port` };
  if (scheme === 'tcp' && (url.pathname !== '/' || url.search !== '' || url.hash !== '')) {
    return { reason: `target ${shown} must be tcp://host:port, with nothing after the port` };
  }
  const port = url.port === '' ? DEFAULT_PORTS[scheme] : Number(url.port);
  if (port === 0) return { reason: `target ${shown} has port 0, outside 1-65535` };
  const bracketed = url.hostname.startsWith('[');
  const host = bracketed ? url.hostname.slice(1, -1) : url.hostname;
  const key = stripDot(host);
  if (!bracketed && !isIPv4(key) && !isDnsName(key)) {
    return { reason: `target ${shown} has an invalid host name` };
  }
  return { scheme, host, key, port };
}

const DEFAULT_PORTS: Readonly<Record<TargetScheme, number>> = { http: 80, https: 443, h2c: 80, tcp: 0 };

function protectedKind(key: string): string | undefined {
  const kind = addressKind(key);
  if (kind !== undefined) return kind;
  if (METADATA_NAMES.has(key)) return 'a cloud metadata address';
  return isKubernetesApi(key) ? 'the Kubernetes API' : undefined;
}

function addressKind(ip: string): string | undefined {
  const family = isIP(ip);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (METADATA.check(ip, type)) return 'a cloud metadata address';
  return LINK_LOCAL.check(ip, type) ? 'a link-local address' : undefined;
}

function localKind(ip: string): string | undefined {
  const family = isIP(ip);
  if (family === 0) return undefined;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (LOOPBACK.check(ip, type)) return 'a loopback address';
  return UNSPECIFIED.check(ip, type) ? 'an unspecified address' : undefined;
}

// RFC 6761 §6.3: `localhost` and every name under it resolve to loopback.
function localName(key: string): string | undefined {
  return key === 'localhost' || key.endsWith('.localhost') ? 'a loopback name' : undefined;
}

// The `default/kubernetes` Service in every short form the search path resolves, and under any cluster
// domain (not only cluster.local). Its ClusterIP is not known here.
function isKubernetesApi(name: string): boolean {
  return (
    ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc'].includes(name) ||
    name.startsWith('kubernetes.default.svc.')
  );
}

// BlockList matches IPv4-mapped IPv6 addresses against its IPv4 rules by itself. NAT64's well-known
// prefix (RFC 6052, 64:ff9b::/96) embeds the IPv4 address in the last 32 bits, so each IPv4 rule is
// added in that form too.
function blockList(v4: readonly string[], v6: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of v4) {
    const [address = '', bits = ''] = cidr.split('/');
    list.addSubnet(address, Number(bits), 'ipv4');
    list.addSubnet(nat64(address), 96 + Number(bits), 'ipv6');
  }
  for (const cidr of v6) {
    const [address = '', bits = ''] = cidr.split('/');
    list.addSubnet(address, Number(bits), 'ipv6');
  }
  return list;
}

function nat64(v4: string): string {
  const [a = 0, b = 0, c = 0, d = 0] = v4.split('.').map(Number);
  return `64:ff9b::${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

// A DNS name (not an address): labels as in-cluster names spell them (RFC 1123 plus `_`, checked before
// lowercasing), at most 253 characters, and a last label that is not all digits (RFC 3696 §2), which
// also keeps `*.0.0.1` from passing for a pattern over IP addresses.
function isDnsName(name: string): boolean {
  return isInClusterHostname(name) && !/^\d+$/.test(name.slice(name.lastIndexOf('.') + 1));
}

// RFC 5952 text form, the one the URL parser gives targets, so that `[0:0::1]` and `[::1]` compare equal.
function canonicalIPv6(ip: string): string | undefined {
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

function hostPort(key: string, port: number): string {
  return `${isIPv6(key) ? `[${key}]` : key}:${port}`;
}

function stripDot(name: string): string {
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

// The target comes from the controller, which is not trusted: bound what reaches the log, and let
// JSON escape control characters so that it cannot forge log lines.
function quote(value: string): string {
  return JSON.stringify(value.length > MAX_REASON_INPUT ? `${value.slice(0, MAX_REASON_INPUT)}…` : value);
}
