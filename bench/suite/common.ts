// Shared by the processes of the proxy bench: addresses, the Host every request carries, and what the
// origin serves.

export const HOST = '127.0.0.1';

/** Every request carries this Host: Sluice routes on it; nginx and node-proxy ignore it. */
export const BENCH_HOST = 'bench.test';

/** GET /small answers this body (13 bytes) with a Content-Length. */
export const SMALL_BODY = 'Hello, world\n';

/** The origin's TCP target reads one byte first: `S` and a 64-bit length (send that many bytes, then
 * FIN), or `E` (echo everything from then on). */
export const TCP_SOURCE = 0x53;
export const TCP_ECHO = 0x45;

/** The slow reader's pace (client.ts), in bytes per second. */
export const SLOW_READ_BPS = 10e6;

export const PATHS = [
  'direct',
  'nginx',
  'node-proxy',
  'ssh',
  'sluice',
  'sluice-peer',
  'nginx-tls',
  'sluice-tls',
  'haproxy',
] as const;
export type PathName = (typeof PATHS)[number];

/** The paths that take the load generator's traffic over TLS (HTTP/1.1 or HTTP/2 by ALPN). */
export const TLS_PATHS: readonly PathName[] = ['nginx-tls', 'sluice-tls'];

/** The paths that carry raw TCP to a TCP target (issue #15); haproxy carries nothing else. */
export const TCP_PATHS: readonly PathName[] = ['direct', 'haproxy', 'ssh', 'sluice'];

export function isTls(path: PathName): boolean {
  return TLS_PATHS.includes(path);
}

/** The paths through Sluice's agent: `sluice-peer` adds a second controller and the peer hop. */
export function throughAgent(path: PathName): boolean {
  return path === 'sluice' || path === 'sluice-peer' || path === 'sluice-tls';
}
