// The workloads of DESIGN §7, as the orchestrator drives them on one rig: ask the load generator
// (wrk or client.ts) for one run through the path, measure the hops where needed, and return the
// figures plus notes. The recovery workloads are in recovery.ts.
import type { Args } from '../common/ipc.js';
import { MB, sleep } from '../common/stats.js';
import { throughAgent } from './common.js';
import type { Sizes } from './plan.js';
import { cpuMs, rssBytes } from './procfs.js';
import type { Rig } from './rig.js';
import { runWrk } from './wrk.js';

export type Metrics = Record<string, number | null>;

export interface Outcome {
  metrics: Metrics;
  notes: string[];
}

export interface Context {
  sizes: Sizes;
  fileLimit: number;
}

/** A generous bound for moving `bytes` (no slower than 5 MB/s) plus setup. */
export function transferTimeout(bytes: number): number {
  return 30_000 + (bytes / (5 * MB)) * 1000;
}

const fmt = (n: number, digits = 0) => n.toFixed(digits);
const mb = (bytes: number) => bytes / MB;

/** Where the load generator sends: the path's port, over TLS on the TLS paths. */
export function to(rig: Rig): { port: number; tls: boolean } {
  return { port: rig.port, tls: rig.tls };
}

/** Checks that the path answers GET /small correctly before anything is measured on it. */
export async function probe(rig: Rig): Promise<void> {
  await rig.client.request('probe', to(rig), 15_000);
}

// --- CPU of the hops ---

/** CPU time (user plus system, from /proc) of each hop, by role, in ms. */
async function cpuByRole(rig: Rig): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const hop of rig.hops) out[hop.role] = (await cpuMs(hop.pid)) ?? Number.NaN;
  return out;
}

/**
 * Runs `load` and gives the CPU ms all the path's hops used meanwhile (null on `direct`, which has
 * none), with a note splitting it by hop. The origin and the load generator are not counted.
 */
export async function hopsCpu<T>(
  rig: Rig,
  what: string,
  load: () => Promise<T>,
): Promise<{ r: T; ms: number | null; note: string | null }> {
  const before = await cpuByRole(rig);
  const r = await load();
  const after = await cpuByRole(rig);
  const roles = Object.keys(before);
  if (roles.length === 0) return { r, ms: null, note: null };
  const used = roles.map((role) => [role, after[role]! - before[role]!] as const);
  const ms = used.reduce((sum, [, v]) => sum + v, 0);
  const note = `${what}: hops' CPU ${fmt(ms)} ms: ${used.map(([role, v]) => `${role} ${fmt(v)}`).join(', ')}`;
  return { r, ms: Number.isFinite(ms) ? ms : null, note };
}

/** `ms` of CPU over `count` units, scaled (1000: µs per unit); null without a CPU figure. */
export function perUnit(ms: number | null, count: number, scale = 1): number | null {
  return ms === null || count <= 0 ? null : (ms * scale) / count;
}

// --- small GETs with wrk ---

export function httpWorkload(connections: number) {
  const key = `httpC${connections}`;
  return {
    async warm(rig: Rig, c: Context): Promise<void> {
      await probe(rig);
      if (c.sizes.httpWarmSeconds > 0) await runWrk(rig.port, connections, c.sizes.httpWarmSeconds, rig.tls);
    },
    async measure(rig: Rig, c: Context): Promise<Outcome> {
      const what = `wrk c=${connections}`;
      const { r, ms, note } = await hopsCpu(rig, what, () =>
        runWrk(rig.port, connections, c.sizes.httpSeconds, rig.tls),
      );
      const notes = note === null ? [] : [`${note} for ${r.requests} requests`];
      if (r.errors > 0 || r.non2xx > 0) {
        notes.push(`${what}: ${r.errors} socket errors, ${r.non2xx} non-2xx of ${r.requests}`);
      }
      const metrics = {
        [`${key}Rps`]: r.rps,
        [`${key}P50Ms`]: r.p50ms,
        [`${key}P99Ms`]: r.p99ms,
        [`${key}CpuUs`]: perUnit(ms, r.requests, 1000),
      };
      return { metrics, notes };
    },
  };
}

// --- bulk transfers with the Node client ---

async function warmBulk(rig: Rig, c: Context, cmd: 'download' | 'upload'): Promise<void> {
  await probe(rig);
  const bytes = c.sizes.warmBytes;
  if (bytes > 0) await rig.client.request(cmd, { ...to(rig), bytes }, transferTimeout(bytes));
}

export function bulkWorkload(cmd: 'download' | 'upload') {
  return {
    warm: (rig: Rig, c: Context) => warmBulk(rig, c, cmd),
    async measure(rig: Rig, c: Context): Promise<Outcome> {
      const bytes = c.sizes.bulkBytes;
      const { r, ms, note } = await hopsCpu(rig, cmd, () =>
        rig.client.request(cmd, { ...to(rig), bytes }, transferTimeout(bytes)),
      );
      const metrics = { [`${cmd}MBps`]: r.MBps as number, [`${cmd}CpuMsPerMB`]: perUnit(ms, mb(bytes)) };
      return { metrics, notes: note === null ? [] : [note] };
    },
  };
}

export const parallelWorkload = {
  warm: (rig: Rig, c: Context) => warmBulk(rig, c, 'download'),
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const { parallelBytes: bytes, parallelStreams: streams } = c.sizes;
    const args = { ...to(rig), bytes, streams };
    const { r, ms, note } = await hopsCpu(rig, 'parallel', () =>
      rig.client.request('parallel', args, transferTimeout(bytes * streams)),
    );
    const metrics = {
      parallel8MBps: r.MBps as number,
      parallel8CpuMsPerMB: perUnit(ms, mb(bytes * streams)),
    };
    return { metrics, notes: note === null ? [] : [note] };
  },
};

// --- WebSocket echo ---

export function wsEchoWorkload(size: 'small' | 'large') {
  return {
    warm: probe,
    async measure(rig: Rig, c: Context): Promise<Outcome> {
      const conns = c.sizes.wsConns[size];
      const key = `wsEcho${size === 'small' ? 100 : 1000}`;
      const args = {
        ...to(rig),
        conns,
        concurrency: c.sizes.wsOpenConcurrency,
        warmMs: c.sizes.wsWarmMs,
        durationMs: c.sizes.wsMs,
      };
      const { r, ms, note } = await hopsCpu(rig, `ws echo ${conns}`, () =>
        rig.client.request('wsEcho', args, c.sizes.wsWarmMs + c.sizes.wsMs + 120_000),
      );
      const notes = [
        `ws echo ${conns}: ${r.messages} messages, connections opened in ${fmt(r.openMs as number)} ms`,
      ];
      // Per echo over the whole call: the connections opened and closed, and the warm-up, are in it.
      if (note !== null) notes.push(`${note} for ${r.echoes} echoes`);
      if ((r.stuck as number) > 0) notes.push(`ws echo ${conns}: ${r.stuck} echoes never came back`);
      if ((r.forced as number) > 0) notes.push(`ws echo ${conns}: ${r.forced} connections did not close`);
      return {
        metrics: {
          [`${key}MsgPerSec`]: r.msgPerSec as number,
          [`${key}P50Ms`]: r.p50ms as number,
          [`${key}P99Ms`]: r.p99ms as number,
          [`${key}CpuUs`]: perUnit(ms, r.echoes as number, 1000),
        },
        notes,
      };
    },
  };
}

// --- memory: idle WebSockets and the slow reader ---

/** RSS of the origin and of each hop, by role, in bytes (VmRSS from /proc, no forced GC). */
async function rssByRole(rig: Rig): Promise<Record<string, number>> {
  const out: Record<string, number> = { origin: (await rssBytes(rig.origin.pid!)) ?? Number.NaN };
  for (const hop of rig.hops) out[hop.role] = (await rssBytes(hop.pid)) ?? Number.NaN;
  return out;
}

/** The role whose figure goes in the "proxy process" row: nginx, node-proxy or sluice's controller. */
function proxyRole(rig: Rig): string | null {
  return rig.hops[0]?.role ?? null;
}

/**
 * How many idle WebSockets fit in the open-file limit: nginx and node-proxy hold two sockets per
 * connection in one process; every other process holds one.
 */
export function idleCount(rig: Rig, c: Context): number {
  const perConn = rig.path === 'nginx' || rig.path === 'node-proxy' ? 2 : 1;
  return Math.min(c.sizes.idleConns, Math.floor((c.fileLimit - 256) / perConn));
}

const kib = (bytes: number) => bytes / 1024;

export const idleWorkload = {
  warm: probe,
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const n = idleCount(rig, c);
    const notes: string[] = [];
    if (n < c.sizes.idleConns) {
      notes.push(
        `ws idle: ${n} connections, not ${c.sizes.idleConns}: the open-file limit is ${c.fileLimit}`,
      );
    }
    // The first connections pay for code paths built lazily, which is not memory per connection.
    const concurrency = c.sizes.idleConcurrency;
    await rig.client.request('idleOpen', { port: rig.port, count: 100, concurrency }, 60_000);
    await rig.client.request('idleClose', { timeoutMs: 20_000 }, 30_000);
    await sleep(c.sizes.settleMs);
    const before = await rssByRole(rig);
    const opened = await rig.client.request(
      'idleOpen',
      { port: rig.port, count: n, concurrency },
      120_000 + n * 20,
    );
    const count = opened.opened as number;
    if (count !== n) notes.push(`ws idle: opened ${count} of ${n}, first error: ${opened.firstError}`);
    await sleep(c.sizes.settleMs);
    const after = await rssByRole(rig);
    const closed = await rig.client.request('idleClose', { timeoutMs: 60_000 }, 90_000);
    if ((closed.forced as number) > 0)
      notes.push(`ws idle: ${closed.forced} connections did not close within 60 s`);
    const per = (role: string | null) =>
      role === null || count === 0 ? null : kib((after[role]! - before[role]!) / count);
    notes.push(
      `ws idle: ${count} connections opened in ${fmt(opened.ms as number)} ms; RSS MB before → after: ${Object.keys(
        after,
      )
        .map((r) => `${r} ${fmt(mb(before[r]!))} → ${fmt(mb(after[r]!))}`)
        .join(', ')}`,
    );
    return {
      metrics: {
        idleWsOriginKiB: per('origin'),
        idleWsProxyKiB: per(proxyRole(rig)),
        idleWsAgentKiB: throughAgent(rig.path) ? per('agent') : null,
      },
      notes,
    };
  },
};

interface Peaks {
  /** Before `splitMs`: the slow stream alone. */
  early: Record<string, number>;
  overall: Record<string, number>;
}

/** Samples every hop's RSS every 100 ms until `stop`, keeping each one's peak. */
function samplePeaks(rig: Rig, splitMs: number): { stop: () => Peaks } {
  const peaks: Peaks = { early: {}, overall: {} };
  const start = performance.now();
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    const early = performance.now() - start < splitMs;
    rssByRole(rig)
      .then((now) => {
        for (const [role, bytes] of Object.entries(now)) {
          if (!Number.isFinite(bytes)) continue;
          peaks.overall[role] = Math.max(peaks.overall[role] ?? 0, bytes);
          if (early) peaks.early[role] = Math.max(peaks.early[role] ?? 0, bytes);
        }
      })
      .catch(() => {})
      .finally(() => {
        busy = false;
      });
  }, 100);
  return {
    stop: () => {
      clearInterval(timer);
      return peaks;
    },
  };
}

export const slowWorkload = {
  warm: probe,
  async measure(rig: Rig, c: Context): Promise<Outcome> {
    const s = c.sizes;
    const start = await rssByRole(rig);
    const sampler = samplePeaks(rig, s.fastDelayMs);
    let r: Args;
    let peaks: Peaks;
    try {
      const args = {
        port: rig.port,
        slowBytes: s.slowBytes,
        slowMs: s.slowMs,
        fastBytes: s.fastBytes,
        fastDelayMs: s.fastDelayMs,
      };
      r = await rig.client.request('slow', args, s.slowMs + transferTimeout(s.fastBytes));
    } finally {
      peaks = sampler.stop();
    }
    const fast = r.fast as Args;
    const roles = Object.keys(start);
    const at = (p: Record<string, number>, k: string) => fmt(mb(p[k] ?? 0));
    const notes = [
      `slow reader: RSS MB at start → peak with the slow stream alone → peak overall: ${roles
        .map((k) => `${k} ${at(start, k)} → ${at(peaks.early, k)} → ${at(peaks.overall, k)}`)
        .join(', ')}`,
      `slow reader: read ${fmt(mb(r.slowRead as number), 1)} MB of ${fmt(mb(s.slowBytes))} MB offered in ${fmt((r.slowMs as number) / 1000, 1)} s; fast download ${fmt(mb(fast.bytes as number))} MB in ${fmt(fast.ms as number)} ms`,
    ];
    if (r.slowComplete === true) notes.push('slow reader: the slow response completed: it was not slow');
    const peak = (role: string | null) => {
      const bytes = role === null ? undefined : peaks.overall[role];
      return bytes === undefined ? null : mb(bytes);
    };
    return {
      metrics: {
        slowPeakProxyMB: peak(proxyRole(rig)),
        slowPeakAgentMB: throughAgent(rig.path) ? peak('agent') : null,
        slowFastMBps: fast.MBps as number,
      },
      notes,
    };
  },
};
