// Tunnel URLs name the transport and the address: tcp://host:port, tls://host:port, ws://host[:port]/path,
// wss://host[:port]/path. They are checked up front so that a typo fails with the URL in the message
// instead of as a connect error much later.
import { isIPv6 } from 'node:net';
import { SluiceError } from '../errors.js';

export type TransportScheme = 'tcp' | 'tls' | 'ws' | 'wss';

export interface TransportTarget {
  scheme: TransportScheme;
  /** A hostname or an IP address, IPv6 without brackets. */
  host: string;
  port: number;
  /** The HTTP path of the upgrade for ws/wss (at least `/`); empty for tcp/tls. */
  path: string;
}

const ALLOWED = 'allowed schemes: tcp://, tls://, ws://, wss://';

// tcp and tls have no well-known port, so a missing port is a mistake rather than a default.
const DEFAULT_PORT: Record<TransportScheme, number | undefined> = {
  tcp: undefined,
  tls: undefined,
  ws: 80,
  wss: 443,
};

export function isSecureScheme(scheme: TransportScheme): boolean {
  return scheme === 'tls' || scheme === 'wss';
}

export function parseTransportUrl(url: string): TransportTarget {
  const parsed = parseUrl(url);
  const scheme = parsed.protocol.slice(0, -1);
  if (!isScheme(scheme)) throw invalidUrl(url, `has the unsupported scheme ${parsed.protocol}//`);
  // Credentials in a URL end up in logs and process listings; the token belongs in the config.
  if (parsed.username !== '' || parsed.password !== '') {
    const redacted = `${parsed.protocol}//***@${parsed.host}${parsed.pathname}`;
    throw invalidUrl(redacted, 'must not carry credentials');
  }
  if (parsed.hostname === '') throw invalidUrl(url, 'has no host');
  if (parsed.search !== '' || parsed.hash !== '') throw invalidUrl(url, 'must not have a query or fragment');
  const plain = scheme === 'tcp' || scheme === 'tls';
  if (plain && parsed.pathname !== '' && parsed.pathname !== '/') {
    throw invalidUrl(url, `has a path, but only ws:// and wss:// URLs take one`);
  }
  const port = parsed.port === '' ? DEFAULT_PORT[scheme] : Number(parsed.port);
  if (port === undefined) {
    throw invalidUrl(url, `has no port; ${scheme}:// URLs need one, e.g. ${scheme}://host:7000`);
  }
  return { scheme, host: unbracket(parsed.hostname), port, path: plain ? '' : parsed.pathname };
}

/** The URL of `target`, always with an explicit port. */
export function formatTransportUrl(target: TransportTarget): string {
  const host = isIPv6(target.host) ? `[${target.host}]` : target.host;
  return `${target.scheme}://${host}:${target.port}${target.path}`;
}

function parseUrl(url: string): URL {
  try {
    return new URL(url);
  } catch {
    throw invalidUrl(url, 'is not a URL');
  }
}

function isScheme(scheme: string): scheme is TransportScheme {
  return Object.hasOwn(DEFAULT_PORT, scheme);
}

function unbracket(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

function invalidUrl(url: string, problem: string): SluiceError {
  return new SluiceError('SLUICE_ERR_INVALID_URL', `tunnel URL "${url}" ${problem} (${ALLOWED})`);
}
