// What a run does: the mode's sizes and durations, and which workloads on which paths, from argv.
import { parseArgs } from 'node:util';
import { GiB, MiB } from '../common/stats.js';
import { PATHS, type PathName } from './common.js';

export type Mode = 'full' | 'quick' | 'smoke';

export interface Sizes {
  mode: Mode;
  /** Rounds of each noisy figure; the median is reported. */
  rounds: number;
  httpSeconds: number;
  /** An unmeasured wrk run first, so that the hops are past JIT warm-up. 0: none. */
  httpWarmSeconds: number;
  bulkBytes: number;
  parallelStreams: number;
  parallelBytes: number;
  /** An unmeasured download (and upload) first. 0: none. */
  warmBytes: number;
  wsConns: { small: number; large: number };
  wsOpenConcurrency: number;
  wsWarmMs: number;
  wsMs: number;
  idleConns: number;
  idleConcurrency: number;
  /** Pause before reading RSS, so that the hops are done with the connections just opened. */
  settleMs: number;
  slowBytes: number;
  slowMs: number;
  fastBytes: number;
  fastDelayMs: number;
  /** The controller's tunnel ping interval and timeout in the dead-tunnel workload. */
  pingIntervalMs: number;
  pingTimeoutMs: number;
  /** The TCP ping-pong: connections, each with one 64-byte message in flight, and its durations. */
  pingPongConns: number;
  pingPongWarmMs: number;
  pingPongMs: number;
  /** redis-benchmark's -n, for SET and for GET. */
  redisRequests: number;
}

export const FULL: Sizes = {
  mode: 'full',
  rounds: 3,
  httpSeconds: 8,
  httpWarmSeconds: 2,
  bulkBytes: 1 * GiB,
  parallelStreams: 8,
  parallelBytes: 256 * MiB,
  warmBytes: 256 * MiB,
  wsConns: { small: 100, large: 1000 },
  wsOpenConcurrency: 100,
  wsWarmMs: 1000,
  wsMs: 5000,
  idleConns: 10_000,
  idleConcurrency: 200,
  settleMs: 1000,
  slowBytes: 1 * GiB,
  slowMs: 10_000,
  fastBytes: 512 * MiB,
  fastDelayMs: 2000,
  pingIntervalMs: 1000,
  pingTimeoutMs: 3000,
  pingPongConns: 50,
  pingPongWarmMs: 1000,
  pingPongMs: 5000,
  redisRequests: 200_000,
};

export const QUICK: Sizes = {
  ...FULL,
  mode: 'quick',
  rounds: 1,
  httpSeconds: 3,
  httpWarmSeconds: 1,
  bulkBytes: 256 * MiB,
  parallelBytes: 32 * MiB,
  // Fresh processes need a few hundred MB before the JIT has the relay optimized: after 64 MiB a
  // controller still spent about twice its warmed-up CPU per MB, so a 256 MiB figure after a 64 MiB
  // warm-up measured mostly the warm-up (and moved with how much code a build loads).
  warmBytes: 512 * MiB,
  wsWarmMs: 500,
  wsMs: 2000,
  idleConns: 2000,
  slowBytes: 256 * MiB,
  slowMs: 4000,
  fastBytes: 128 * MiB,
  fastDelayMs: 1000,
  pingPongWarmMs: 500,
  pingPongMs: 2000,
  redisRequests: 50_000,
};

/** One very short round of everything: proves the harness works, measures nothing worth keeping. */
export const SMOKE: Sizes = {
  ...QUICK,
  mode: 'smoke',
  httpSeconds: 1,
  httpWarmSeconds: 0,
  bulkBytes: 16 * MiB,
  parallelBytes: 2 * MiB,
  warmBytes: 0,
  wsConns: { small: 20, large: 100 },
  wsWarmMs: 0,
  wsMs: 500,
  idleConns: 200,
  settleMs: 200,
  slowBytes: 64 * MiB,
  slowMs: 1000,
  fastBytes: 16 * MiB,
  fastDelayMs: 200,
  pingIntervalMs: 250,
  pingTimeoutMs: 750,
  pingPongWarmMs: 0,
  pingPongMs: 500,
  redisRequests: 2000,
};

export const WORKLOADS = [
  'http-c10',
  'http-c50',
  'http-c100',
  'download',
  'upload',
  'parallel8',
  'ws-echo-100',
  'ws-echo-1000',
  'ws-idle',
  'slow-reader',
  'dead-tunnel',
  'agent-restart',
  'h2-c10',
  'h2-c100',
  'h2-download',
  'tcp-bulk',
  'tcp-pingpong',
  'redis',
] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export interface Plan {
  sizes: Sizes;
  workloads: WorkloadName[];
  paths: PathName[];
  /** Where latest.json and latest.md go; null: the default for the mode (see run.ts). */
  out: string | null;
  /** True when every workload runs on every path. */
  complete: boolean;
}

const USAGE = `usage: node dist/bench/run.js [--quick | --smoke] [--only WORKLOADS] [--paths PATHS] [--out DIR]
  --only   comma-separated: ${WORKLOADS.join(',')}
  --paths  comma-separated: ${PATHS.join(',')}
  --out    directory for latest.json and latest.md`;

function usage(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

function list<T extends string>(value: string | undefined, all: readonly T[], what: string): T[] {
  if (value === undefined) return [...all];
  const picked = value.split(',').map((v) => v.trim());
  for (const v of picked) if (!(all as readonly string[]).includes(v)) usage(`unknown ${what} ${v}`);
  // Keep the canonical order, whatever the order on the command line.
  return all.filter((v) => picked.includes(v));
}

export function plan(argv: string[]): Plan {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean', default: false },
        smoke: { type: 'boolean', default: false },
        only: { type: 'string' },
        paths: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.quick && values.smoke) usage('--quick and --smoke exclude each other');
  const workloads = list(values.only, WORKLOADS, 'workload');
  const paths = list(values.paths, PATHS, 'path');
  return {
    sizes: values.smoke ? SMOKE : values.quick ? QUICK : FULL,
    workloads,
    paths,
    out: values.out ?? null,
    complete: workloads.length === WORKLOADS.length && paths.length === PATHS.length,
  };
}
