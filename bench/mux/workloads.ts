// The workloads, as the orchestrator drives them: each asks the load generator for one run through
// the relays, measures the relays where it needs to, and returns its figures plus notes.
import type { Args } from '../common/ipc.js';
import { MB, MiB, median } from '../common/stats.js';
import { type Rig, relayRss, relayStats } from './rig.js';

export interface Sizes {
  quick: boolean;
  singleBytes: number;
  singleRounds: number;
  parallelStreams: number;
  parallelBytes: number;
  exchangeMs: number;
  exchangeConcurrency: number;
  rttStreams: number;
  rttMs: number;
  idleStreams: number;
  idleConcurrency: number;
  slowBytes: number;
  slowMs: number;
  fastBytes: number;
}

export const FULL: Sizes = {
  quick: false,
  singleBytes: 1024 * MiB,
  singleRounds: 3,
  parallelStreams: 8,
  parallelBytes: 256 * MiB,
  exchangeMs: 10_000,
  exchangeConcurrency: 64,
  rttStreams: 16,
  rttMs: 5000,
  idleStreams: 10_000,
  idleConcurrency: 200,
  slowBytes: 1024 * MiB,
  slowMs: 10_000,
  fastBytes: 512 * MiB,
};

export const QUICK: Sizes = {
  ...FULL,
  quick: true,
  singleBytes: 256 * MiB,
  singleRounds: 1,
  parallelBytes: 32 * MiB,
  exchangeMs: 3000,
  rttMs: 2000,
  idleStreams: 2000,
  slowBytes: 256 * MiB,
  slowMs: 5000,
  fastBytes: 128 * MiB,
};

export type Metrics = Record<string, number | null>;
export interface Outcome {
  metrics: Metrics;
  notes: string[];
}

/** A generous bound for moving `bytes` (no slower than 5 MB/s) plus setup. */
function transferTimeout(bytes: number): number {
  return 30_000 + (bytes / (5 * MB)) * 1000;
}

const mb = (bytes: number) => bytes / MB;
const fmt = (n: number, digits = 0) => n.toFixed(digits);

/** Bytes of one unmeasured transfer, so that timed ones do not pay for a fresh rig's JIT warm-up. */
const WARM_UP_BYTES = 64 * MiB;

function warmUp(rig: Rig): Promise<unknown> {
  return rig.client.request(
    'single',
    { port: rig.port, bytes: WARM_UP_BYTES },
    transferTimeout(WARM_UP_BYTES),
  );
}

async function single(rig: Rig, s: Sizes): Promise<Outcome> {
  await warmUp(rig);
  const rounds: number[] = [];
  for (let i = 0; i < s.singleRounds; i++) {
    const r = await rig.client.request(
      'single',
      { port: rig.port, bytes: s.singleBytes },
      transferTimeout(s.singleBytes),
    );
    rounds.push(r.MBps as number);
  }
  const notes = [
    `single: ${fmt(mb(s.singleBytes))} MB per round, rounds ${rounds.map((r) => fmt(r)).join(' / ')} MB/s`,
  ];
  return { metrics: { singleStreamMBps: median(rounds) }, notes };
}

async function parallel(rig: Rig, s: Sizes): Promise<Outcome> {
  await warmUp(rig);
  const total = s.parallelBytes * s.parallelStreams;
  const args = { port: rig.port, bytes: s.parallelBytes, streams: s.parallelStreams };
  const r = await rig.client.request('parallel', args, transferTimeout(total));
  return { metrics: { parallel8MBps: r.MBps as number }, notes: [] };
}

async function exchange(rig: Rig, s: Sizes): Promise<Outcome> {
  const args = { port: rig.port, durationMs: s.exchangeMs, concurrency: s.exchangeConcurrency };
  const r = await rig.client.request('exchange', args, s.exchangeMs + 60_000);
  const notes = [`exchange: ${r.ops} ops in ${fmt(r.ms as number)} ms`];
  if ((r.errors as number) > 0) notes.push(`exchange: ${r.errors} failed ops, first: ${r.firstError}`);
  return { metrics: { openExchangePerSec: r.perSec as number }, notes };
}

async function rtt(rig: Rig, s: Sizes): Promise<Outcome> {
  const args = { port: rig.port, durationMs: s.rttMs, streams: s.rttStreams };
  const r = await rig.client.request('rtt', args, s.rttMs + 30_000);
  return {
    metrics: { rttP50us: r.p50us as number, rttP99us: r.p99us as number },
    notes: [`rtt: ${r.count} round trips on ${s.rttStreams} streams`],
  };
}

/** How many idle streams fit in the open-file limit; `pipe` relays hold two sockets per stream. */
export function idleCount(s: Sizes, impl: Rig['impl'], fileLimit: number): number {
  const perStream = impl === 'pipe' ? 2 : 1;
  return Math.min(s.idleStreams, Math.floor((fileLimit - 256) / perStream));
}

async function idle(rig: Rig, s: Sizes, fileLimit: number): Promise<Outcome> {
  const n = idleCount(s, rig.impl, fileLimit);
  const notes: string[] = [];
  if (n < s.idleStreams)
    notes.push(`idle: ${n} streams, not ${s.idleStreams}: open-file limit is ${fileLimit}`);
  // Warm up: the first streams pay for lazily built code paths, which is not per-stream memory.
  await rig.client.request('idleOpen', { port: rig.port, count: 100, concurrency: 50 }, 60_000);
  await rig.client.request('idleClose', { timeoutMs: 20_000 }, 30_000);
  notes.push(...(await settle(rig, 'idle warm-up')));
  const before = await relayRss(rig, true);
  const opened = await rig.client.request(
    'idleOpen',
    { port: rig.port, count: n, concurrency: s.idleConcurrency },
    120_000 + n * 20,
  );
  const count = opened.opened as number;
  if (count !== n)
    notes.push(`idle: opened ${count} of ${n}, ${opened.errors} errors, first: ${opened.firstError}`);
  const after = await relayRss(rig, true);
  const [cs, as] = await relayStats(rig);
  notes.push(
    `idle: ${count} streams opened in ${fmt(opened.ms as number)} ms; relays hold ${cs.active} / ${as.active}; relays run with ${IDLE_RELAY_FLAGS.join(' ')}`,
  );
  const closed = await rig.client.request('idleClose', { timeoutMs: 60_000 }, 90_000);
  if ((closed.forced as number) > 0) notes.push(`idle: ${closed.forced} streams did not close within 60 s`);
  return {
    metrics: {
      idleController: count > 0 ? (after[0] - before[0]) / count : null,
      idleAgent: count > 0 ? (after[1] - before[1]) / count : null,
    },
    notes,
  };
}

interface Peaks {
  /** Before the fast stream starts: the slow stream alone. */
  slowOnly: [number, number];
  overall: [number, number];
}

/** Samples both relays' RSS every 100 ms until `stop`; peaks before `splitMs` are kept apart. */
function sampleRss(rig: Rig, splitMs: number): { stop: () => Peaks } {
  const peaks: Peaks = { slowOnly: [0, 0], overall: [0, 0] };
  const start = performance.now();
  let busy = false;
  const record = (into: [number, number], c: number, a: number) => {
    into[0] = Math.max(into[0], c);
    into[1] = Math.max(into[1], a);
  };
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    const early = performance.now() - start < splitMs;
    relayRss(rig, false)
      .then(([c, a]) => {
        record(peaks.overall, c, a);
        if (early) record(peaks.slowOnly, c, a);
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

async function slow(rig: Rig, s: Sizes): Promise<Outcome> {
  // The fast stream is compared with the single stream's speed, which is measured warm: without
  // this, a fresh rig's JIT warm-up fell on the fast stream alone (most of a 128 MiB --quick run).
  await warmUp(rig);
  const start = await relayRss(rig, false);
  const fastDelayMs = Math.round(s.slowMs / 5);
  const sampler = sampleRss(rig, fastDelayMs);
  const args = {
    port: rig.port,
    slowBytes: s.slowBytes,
    slowMs: s.slowMs,
    fastBytes: s.fastBytes,
    fastDelayMs,
  };
  let r: Args;
  let peaks: Peaks;
  try {
    r = await rig.client.request('slow', args, s.slowMs + transferTimeout(s.fastBytes));
  } finally {
    peaks = sampler.stop();
  }
  const sink = await rig.sink.request('stats', {}, 10_000);
  const fast = r.fast as Args;
  const pair = (p: [number, number]) => `${fmt(mb(p[0]))} / ${fmt(mb(p[1]))} MB`;
  const notes = [
    `slow: relay RSS (controller / agent) at start ${pair(start)}, peak with the slow stream alone ${pair(peaks.slowOnly)}, peak overall ${pair(peaks.overall)}`,
    `slow: the slow reader read ${fmt(mb(sink.slowRead as number), 1)} MB in ${s.slowMs / 1000} s; the client queued ${fmt(mb(r.slowOffered as number), 1)} MB into it`,
    `slow: fast stream ${fmt(mb(fast.bytes as number))} MB in ${fmt(fast.ms as number)} ms, starting ${fastDelayMs} ms after the slow one`,
  ];
  const peak = Math.max(...peaks.overall);
  return {
    metrics: { slowReaderPeakRssMB: mb(peak), fastStreamBesideSlowMBps: fast.MBps as number },
    notes,
  };
}

/**
 * Waits until both relays hold no connection or stream (bounded); returns a note if they do not,
 * since a stream left behind after its peers closed is a leak.
 */
export async function settle(rig: Rig, what: string): Promise<string[]> {
  const deadline = performance.now() + 10_000;
  let last: [Args, Args] = await relayStats(rig);
  while (performance.now() < deadline) {
    if (isQuiet(last[0]) && isQuiet(last[1])) return [];
    await new Promise((resolve) => setTimeout(resolve, 50));
    last = await relayStats(rig);
  }
  return [`${what}: relays still busy 10 s after the workload: ${JSON.stringify(last)}`];
}

function isQuiet(stats: Args): boolean {
  const session = stats.session as Args | null;
  return stats.active === 0 && (session === null || session.streams === 0);
}

export const WORKLOADS = ['single', 'parallel8', 'exchange', 'rtt', 'idle', 'slow'] as const;
export type Workload = (typeof WORKLOADS)[number];

/**
 * The idle relays keep V8's young generation at its initial 1 MiB semi-spaces. By default V8 grows
 * it up to 16 MiB per semi-space while streams are being opened, whenever its heuristics fire: that
 * is up to ~32 MiB of RSS once per process, not per stream, and where it lands depends on the load
 * on the machine. Spread over 2,000 streams it added anything from 0 to ~6 KB per stream to the
 * figure from one run to the next. Fixed, the figure is what the held streams themselves keep.
 */
export const IDLE_RELAY_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/** Extra node flags for the relays of a workload's rig. */
export function relayNodeFlags(w: Workload): readonly string[] {
  return w === 'idle' ? IDLE_RELAY_FLAGS : [];
}

export function runWorkload(w: Workload, rig: Rig, s: Sizes, fileLimit: number): Promise<Outcome> {
  switch (w) {
    case 'single':
      return single(rig, s);
    case 'parallel8':
      return parallel(rig, s);
    case 'exchange':
      return exchange(rig, s);
    case 'rtt':
      return rtt(rig, s);
    case 'idle':
      return idle(rig, s, fileLimit);
    case 'slow':
      return slow(rig, s);
  }
}
