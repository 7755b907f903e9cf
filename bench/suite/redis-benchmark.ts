// redis-benchmark (Debian's, beside redis-server) as the load generator of the `redis` workload
// (issue #15): SET and GET of 3-byte values on 50 connections, no pipelining, to a redis-server of the
// rig's, straight or through the path's hops.
import { HOST } from './common.js';
import { binaryOnPath, runTool } from './ports.js';

export const REDIS_CONNS = 50;

export function redisBenchmarkBinary(): string | null {
  return binaryOnPath('redis-benchmark', ['/usr/local/bin']);
}

export interface RedisOps {
  test: string;
  rps: number;
  p50ms: number;
  p99ms: number;
}

/** `--csv`: a header, then one quoted row per test: test, rps, avg, min, p50, p95, p99, max. */
export function parseRedisCsv(text: string): RedisOps[] {
  const out: RedisOps[] = [];
  for (const line of text.split('\n')) {
    const cols = line
      .trim()
      .split(',')
      .map((c) => c.replace(/^"|"$/g, ''));
    if (cols.length < 7 || cols[0] === 'test' || !Number.isFinite(Number(cols[1]))) continue;
    out.push({ test: cols[0]!, rps: Number(cols[1]), p50ms: Number(cols[4]), p99ms: Number(cols[6]) });
  }
  return out;
}

/** SET then GET, `requests` each, on REDIS_CONNS connections. */
export async function runRedisBenchmark(port: number, requests: number): Promise<RedisOps[]> {
  const binary = redisBenchmarkBinary();
  if (binary === null) throw new Error('redis-benchmark not found (apt-get install redis-tools)');
  const args = ['-h', HOST, '-p', String(port), '-c', String(REDIS_CONNS), '-n', String(requests)];
  args.push('-t', 'set,get', '--csv');
  const limitMs = 60_000 + requests;
  const rows = parseRedisCsv(await runTool('redis-benchmark', binary, args, limitMs));
  for (const test of ['SET', 'GET'])
    if (!rows.some((r) => r.test === test)) throw new Error(`redis-benchmark gave no ${test} row`);
  return rows;
}
