// Runs one workload on every selected path. The paths' rigs are started side by side and the rounds
// interleave (round 1 on every path, then round 2, each round starting one path further on), so that
// a burst of noise on this shared machine hits every path alike instead of one path's rounds.
import { isTls, type PathName, TCP_PATHS } from './common.js';
import type { Plan, Sizes, WorkloadName } from './plan.js';
import { agentRestart, deadTunnel } from './recovery.js';
import { type Rig, startRig, stopRig, type Target } from './rig.js';
import {
  h2DownloadWorkload,
  h2Workload,
  redisWorkload,
  tcpBulkWorkload,
  tcpPingPongWorkload,
} from './tls-tcp-workloads.js';
import {
  bulkWorkload,
  type Context,
  httpWorkload,
  idleWorkload,
  type Outcome,
  parallelWorkload,
  probe,
  slowWorkload,
  wsEchoWorkload,
} from './workloads.js';

/** Which paths a workload runs on: the HTTP ones (default), these and the TLS ones, or others. */
type On = 'http' | 'http+tls' | 'tls' | 'tcp' | 'sluice';

interface OnRig {
  on?: On;
  /** What the rig's hops lead to; the origin's HTTP server unless given. */
  target?: Target;
  rounds: (s: Sizes) => number;
  warm: (rig: Rig, c: Context) => Promise<void>;
  measure: (rig: Rig, c: Context) => Promise<Outcome>;
}

/** Each round on processes of its own (the tunnel is dead after one). */
interface Standalone {
  on: 'sluice';
  rounds: (s: Sizes) => number;
  standalone: (c: Context) => Promise<Outcome>;
}

const noisy = (s: Sizes) => s.rounds;
/** Memory figures: one round; they vary far less than the throughput ones. */
const once = () => 1;

const WORKLOADS: Record<WorkloadName, OnRig | Standalone> = {
  'http-c10': { on: 'http+tls', rounds: noisy, ...httpWorkload(10) },
  // Issue #17 states its CPU-per-request target at c=50.
  'http-c50': { rounds: noisy, ...httpWorkload(50) },
  'http-c100': { on: 'http+tls', rounds: noisy, ...httpWorkload(100) },
  download: { on: 'http+tls', rounds: noisy, ...bulkWorkload('download') },
  upload: { rounds: noisy, ...bulkWorkload('upload') },
  parallel8: { rounds: noisy, ...parallelWorkload },
  'ws-echo-100': { on: 'http+tls', rounds: noisy, ...wsEchoWorkload('small') },
  'ws-echo-1000': { rounds: noisy, ...wsEchoWorkload('large') },
  'ws-idle': { rounds: once, ...idleWorkload },
  'slow-reader': { rounds: once, ...slowWorkload },
  'dead-tunnel': { on: 'sluice', rounds: noisy, standalone: deadTunnel },
  'agent-restart': { on: 'sluice', rounds: noisy, warm: probe, measure: agentRestart },
  'h2-c10': { on: 'tls', rounds: noisy, ...h2Workload(10) },
  'h2-c100': { on: 'tls', rounds: noisy, ...h2Workload(100) },
  'h2-download': { on: 'tls', rounds: noisy, ...h2DownloadWorkload },
  'tcp-bulk': { on: 'tcp', rounds: noisy, ...tcpBulkWorkload },
  'tcp-pingpong': { on: 'tcp', rounds: noisy, ...tcpPingPongWorkload },
  redis: { on: 'tcp', rounds: noisy, ...redisWorkload },
};

/** The plain HTTP paths: every path but the TLS ones and haproxy, which carries TCP only. */
function runsOn(on: On, path: PathName): boolean {
  const http = !isTls(path) && path !== 'haproxy';
  switch (on) {
    case 'http':
      return http;
    case 'http+tls':
      return http || isTls(path);
    case 'tls':
      return isTls(path);
    case 'tcp':
      return TCP_PATHS.includes(path);
    case 'sluice':
      return path === 'sluice';
  }
}

/** Every round's value of every figure, by path. */
export type Rounds = Partial<Record<PathName, Record<string, (number | null)[]>>>;

export interface WorkloadResult {
  rounds: Rounds;
  notes: string[];
  failures: string[];
}

export function workloadPaths(name: WorkloadName, plan: Plan): PathName[] {
  const on = WORKLOADS[name].on ?? 'http';
  return plan.paths.filter((p) => runsOn(on, p));
}

function firstLines(err: unknown): string {
  const text = (err instanceof Error ? err.message : String(err)).split('\n').slice(0, 4).join(' | ');
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

export async function runWorkload(name: WorkloadName, plan: Plan, c: Context): Promise<WorkloadResult> {
  const def = WORKLOADS[name];
  const paths = workloadPaths(name, plan);
  const result: WorkloadResult = { rounds: {}, notes: [], failures: [] };
  const record = (path: PathName, o: Outcome) => {
    const into = (result.rounds[path] ??= {});
    for (const [key, value] of Object.entries(o.metrics)) (into[key] ??= []).push(value);
    result.notes.push(...o.notes.map((n) => `${name} [${path}] ${n}`));
  };
  const fail = (path: PathName, what: string, err: unknown) =>
    result.failures.push(`${name} [${path}] ${what} FAILED: ${firstLines(err)}`);
  const rounds = def.rounds(c.sizes);

  if ('standalone' in def) {
    for (const path of paths) {
      for (let r = 0; r < rounds; r++) {
        try {
          record(path, await def.standalone(c));
        } catch (err) {
          fail(path, `round ${r + 1}`, err);
        }
      }
    }
    return result;
  }

  const rigs = new Map<PathName, Rig>();
  try {
    // Started side by side (nothing is measured yet), warmed up one by one.
    const target = def.target === undefined ? {} : { target: def.target };
    const started = await Promise.allSettled(
      paths.map((path) => startRig(path, { fileLimit: c.fileLimit, ...target })),
    );
    for (const [i, path] of paths.entries()) {
      const s = started[i]!;
      if (s.status === 'rejected') {
        fail(path, 'start', s.reason);
        continue;
      }
      try {
        await def.warm(s.value, c);
        rigs.set(path, s.value);
      } catch (err) {
        fail(path, 'warm-up', err);
        result.notes.push(...(await stopRig(s.value)).map((n) => `${name} [${path}] ${n}`));
      }
    }
    for (let r = 0; r < rounds; r++) {
      const order = [...rigs.keys()];
      const turned = [...order.slice(r % order.length), ...order.slice(0, r % order.length)];
      for (const path of turned) {
        try {
          record(path, await def.measure(rigs.get(path)!, c));
        } catch (err) {
          fail(path, `round ${r + 1}`, err);
          // A path that failed once is not trusted with further rounds.
          result.notes.push(...(await stopRig(rigs.get(path)!)).map((n) => `${name} [${path}] ${n}`));
          rigs.delete(path);
        }
      }
    }
  } finally {
    for (const [path, rig] of rigs) {
      result.notes.push(...(await stopRig(rig)).map((n) => `${name} [${path}] ${n}`));
    }
  }
  return result;
}
