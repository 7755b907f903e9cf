// The workloads of issues #14 and #15 that the HTTP/1.1 ones (workloads.ts) do not cover: HTTP/2 on
// the TLS paths with h2load, and raw TCP (bulk, ping-pong, redis-benchmark) on the TCP paths. The
// hops' CPU is counted from /proc as for the others: per request, per round trip, per op or per MB.
import { MB } from '../common/stats.js';
import { H2_STREAMS, requestsFor, runH2Download, runH2load } from './h2load.js';
import { REDIS_CONNS, runRedisBenchmark } from './redis-benchmark.js';
import type { Rig } from './rig.js';
import { type Context, hopsCpu, type Outcome, perUnit, probe, transferTimeout } from './workloads.js';

const fmt = (n: number, digits = 0) => n.toFixed(digits);

// --- HTTP/2 ---

export function h2Workload(connections: number) {
  const key = `h2C${connections}`;
  // Each rig's req/s in its last run (the warm-up's, then each round's), which sizes its next measured
  // run to about httpSeconds.
  const rates = new WeakMap<Rig, number>();
  /**
   * h2load by request count (see runH2load). Bounded in time as if it ran at a tenth of the rate (of
   * 500 req/s when none is known yet), plus a minute, and at most 5 minutes.
   */
  const run = (rig: Rig, rps: number, seconds: number) => {
    const requests = requestsFor(rps, seconds, connections);
    const limitMs = Math.min(300_000, 60_000 + (10_000 * requests) / Math.max(rps, 500));
    return runH2load(rig.port, connections, requests, limitMs);
  };
  return {
    async warm(rig: Rig, c: Context): Promise<void> {
      await probe(rig);
      // First the smallest run, to learn the rate; then, outside smoke runs, one of httpWarmSeconds.
      let r = await run(rig, 0, 0);
      if (c.sizes.httpWarmSeconds > 0) r = await run(rig, r.rps, c.sizes.httpWarmSeconds);
      rates.set(rig, r.rps);
    },
    async measure(rig: Rig, c: Context): Promise<Outcome> {
      const what = `h2load c=${connections} m=${H2_STREAMS}`;
      const { r, ms, note } = await hopsCpu(rig, what, () =>
        run(rig, rates.get(rig) ?? 0, c.sizes.httpSeconds),
      );
      rates.set(rig, r.rps);
      const notes = note === null ? [] : [`${note} for ${r.requests} requests`];
      if (r.bad > 0) notes.push(`${what}: ${r.bad} failed or non-2xx of ${r.requests}`);
      return {
        metrics: {
          [`${key}Rps`]: r.rps,
          [`${key}MeanMs`]: r.meanMs,
          [`${key}CpuUs`]: perUnit(ms, r.requests, 1000),
        },
        notes,
      };
    },
  };
}

export const h2DownloadWorkload = {
  async warm(rig: Rig, c: Context): Promise<void> {
    await probe(rig);
    const bytes = c.sizes.warmBytes;
    if (bytes > 0) await runH2Download(rig.port, bytes, transferTimeout(bytes));
  },
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const bytes = c.sizes.bulkBytes;
    const { r, ms, note } = await hopsCpu(rig, 'h2 download', () =>
      runH2Download(rig.port, bytes, transferTimeout(bytes)),
    );
    // h2load's "finished in" runs from its start to the last byte: TLS handshake included, once.
    const metrics = {
      h2DownloadMBps: bytes / MB / r.seconds,
      h2DownloadCpuMsPerMB: perUnit(ms, bytes / MB),
    };
    return { metrics, notes: note === null ? [] : [note] };
  },
};

// --- raw TCP ---

/** One round trip through the path before anything is measured: an echo, or Redis's PING. */
export async function tcpProbe(rig: Rig): Promise<void> {
  await rig.client.request('tcpProbe', { port: rig.port, redis: rig.target === 'redis' }, 15_000);
}

export const tcpBulkWorkload = {
  target: 'tcp' as const,
  async warm(rig: Rig, c: Context): Promise<void> {
    await tcpProbe(rig);
    const bytes = c.sizes.warmBytes;
    if (bytes > 0) await rig.client.request('tcpBulk', { port: rig.port, bytes }, transferTimeout(bytes));
  },
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const bytes = c.sizes.bulkBytes;
    const { r, ms, note } = await hopsCpu(rig, 'tcp bulk', () =>
      rig.client.request('tcpBulk', { port: rig.port, bytes }, transferTimeout(bytes)),
    );
    const metrics = { tcpBulkMBps: r.MBps as number, tcpBulkCpuMsPerMB: perUnit(ms, bytes / MB) };
    return { metrics, notes: note === null ? [] : [note] };
  },
};

export const tcpPingPongWorkload = {
  target: 'tcp' as const,
  warm: tcpProbe,
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const s = c.sizes;
    const args = {
      port: rig.port,
      conns: s.pingPongConns,
      warmMs: s.pingPongWarmMs,
      durationMs: s.pingPongMs,
    };
    const limit = s.pingPongWarmMs + s.pingPongMs + 60_000;
    const what = `tcp ping-pong c=${s.pingPongConns}`;
    const { r, ms, note } = await hopsCpu(rig, what, () => rig.client.request('tcpPingPong', args, limit));
    // The CPU window spans the connections' setup and warm-up too: divided by the counted round trips
    // it reads high by the warm-up's share, on every path alike.
    const notes = [
      `${what}: ${r.roundTrips} round trips counted, connections opened in ${fmt(r.openMs as number)} ms`,
    ];
    if (note !== null) notes.push(note);
    if ((r.stuck as number) > 0)
      notes.push(`${what}: ${r.stuck} connections had an echo that never came back`);
    return {
      metrics: {
        tcpPingPongRtps: r.perSec as number,
        tcpPingPongP50Ms: r.p50ms as number,
        tcpPingPongP99Ms: r.p99ms as number,
        tcpPingPongCpuUs: perUnit(ms, r.roundTrips as number, 1000),
      },
      notes,
    };
  },
};

export const redisWorkload = {
  target: 'redis' as const,
  warm: tcpProbe,
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const n = c.sizes.redisRequests;
    const what = `redis-benchmark -c ${REDIS_CONNS} -n ${n} -t set,get`;
    const { r, ms, note } = await hopsCpu(rig, what, () => runRedisBenchmark(rig.port, n));
    const set = r.find((x) => x.test === 'SET')!;
    const get = r.find((x) => x.test === 'GET')!;
    return {
      metrics: {
        redisSetOps: set.rps,
        redisGetOps: get.rps,
        redisGetP50Ms: get.p50ms,
        redisGetP99Ms: get.p99ms,
        redisCpuUs: perUnit(ms, 2 * n, 1000),
      },
      notes: note === null ? [] : [`${note} for ${2 * n} ops`],
    };
  },
};
