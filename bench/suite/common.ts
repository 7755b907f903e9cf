// Shared by the processes of the proxy bench: addresses, the Host every request carries, and what the
// origin serves.

export const HOST = '127.0.0.1';

/** Every request carries this Host: Sluice routes on it; nginx and node-proxy ignore it. */
export const BENCH_HOST = 'bench.test';

/** GET /small answers this body (13 bytes) with a Content-Length. */
export const SMALL_BODY = 'Hello, world\n';

/** The slow reader's pace (client.ts), in bytes per second. */
export const SLOW_READ_BPS = 10e6;

export const PATHS = ['direct', 'nginx', 'node-proxy', 'ssh', 'sluice', 'sluice-peer'] as const;
export type PathName = (typeof PATHS)[number];

/** The paths through Sluice's agent: `sluice-peer` adds a second controller and the peer hop. */
export function throughAgent(path: PathName): boolean {
  return path === 'sluice' || path === 'sluice-peer';
}
