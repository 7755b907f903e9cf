// wrk as the load generator for small keep-alive GETs: one process per run, its report parsed.
import { BENCH_HOST, HOST } from './common.js';
import { binaryOnPath, runTool } from './ports.js';

export function wrkBinary(): string | null {
  return binaryOnPath('wrk');
}

export interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  requests: number;
  /** Socket errors and non-2xx answers, as wrk counts them. */
  errors: number;
  non2xx: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function latencyMs(text: string, label: string): number {
  const m = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text);
  if (m === null) throw new Error(`wrk report without a ${label} latency:\n${text}`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

export function parseWrk(text: string): WrkResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  const total = /^\s*(\d+) requests in/m.exec(text);
  if (rps === null || total === null) throw new Error(`wrk report without Requests/sec:\n${text}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0);
  return {
    rps: Number(rps[1]),
    p50ms: latencyMs(text, '50%'),
    p99ms: latencyMs(text, '99%'),
    requests: Number(total[1]),
    errors,
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
  };
}

/**
 * `wrk -t1 -cN -dS --latency -H 'Host: bench.test' http://127.0.0.1:port/small`, bounded in time;
 * `https://` on the TLS paths (wrk speaks HTTP/1.1 only, whatever the server offers by ALPN).
 */
export async function runWrk(
  port: number,
  connections: number,
  seconds: number,
  tls = false,
): Promise<WrkResult> {
  const binary = wrkBinary();
  if (binary === null) throw new Error('wrk not found (apt-get install wrk)');
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '-H',
    `Host: ${BENCH_HOST}`,
    `${tls ? 'https' : 'http'}://${HOST}:${port}/small`,
  ];
  return parseWrk(await runTool('wrk', binary, args, (seconds + 30) * 1000));
}
