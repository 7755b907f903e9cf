// Two builds of Sluice side by side (`npm run bench:ab`): the same path and workload on build A and
// build B, their rounds interleaved A B, B A, ... so that a burst of load on the machine hits both
// alike. Each build runs its own rig (its own bench harness, controller and agent, from its own
// dist/). Per round: the hops' CPU per request or per MB (/proc/PID/stat) and their read and write
// system calls (/proc/PID/io). The verdict is the median of the per-pair ratios B/A. See
// bench/README.md, "Two builds against each other".
//   node dist/bench/ab.js --a DIR [--b DIR] [--path sluice] [--workload http-c50] [--pairs 8] [--fresh-rigs]
//     [--idle MS]
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { installCleanup } from './common/proc.js';
import { MB, median, MiB, sleep } from './common/stats.js';
import { PATHS } from './suite/common.js';
import { cpuMs, syscallCounts } from './suite/procfs.js';
import type { Rig } from './suite/rig.js';
import { to, transferTimeout } from './suite/workloads.js';
import { runWrk, wrkBinary } from './suite/wrk.js';

const HERE = fileURLToPath(new URL('../../', import.meta.url));
const WORKLOADS = [
  'http-c10',
  'http-c50',
  'http-c100',
  'download',
  'upload',
  'ws-echo-100',
  'ws-echo-1000',
] as const;
type Workload = (typeof WORKLOADS)[number];
const WATCHDOG_MS = 30 * 60_000;

/** What a build's dist/bench exposes that this tool uses: its rig, and the kill of its children. */
interface Build {
  dir: string;
  startRig(path: string, o: { fileLimit: number }): Promise<Rig>;
  stopRig(rig: Rig): Promise<string[]>;
  killAll(): void;
}

interface Round {
  /** CPU µs per request (http-*) or message (ws-echo-*), or ms per MB (bulk), all hops together. */
  cpu: number;
  /** req/s, msg/s or MB/s. */
  rate: number;
  /** The echo's p99 round trip in ms (ws-echo-*); NaN for the others. */
  p99: number;
  /** Read plus write system calls of the hops per request or per MB. */
  syscalls: number;
  /** CPU per hop, same unit, in the rig's hop order. */
  split: number[];
}

function usage(message: string): never {
  console.error(`bench:ab: ${message}`);
  console.error(
    'usage: node dist/bench/ab.js --a DIR [--b DIR] [--path sluice] [--workload ' +
      `${WORKLOADS.join('|')}] [--pairs N] [--seconds S] [--mb N] [--fresh-rigs] [--idle MS]`,
  );
  process.exit(2);
}

async function loadBuild(dir: string): Promise<Build> {
  const root = resolve(dir);
  const rigFile = resolve(root, 'dist/bench/suite/rig.js');
  if (!existsSync(rigFile)) usage(`${root} has no dist/bench/suite/rig.js: build it first (npm run compile)`);
  if (!existsSync(resolve(root, 'bin/sluice.js'))) usage(`${root} has no bin/sluice.js`);
  const rig = (await import(pathToFileURL(rigFile).href)) as Pick<Build, 'startRig' | 'stopRig'>;
  const proc = (await import(pathToFileURL(resolve(root, 'dist/bench/common/proc.js')).href)) as Pick<
    Build,
    'killAll'
  >;
  return { dir: root, startRig: rig.startRig, stopRig: rig.stopRig, killAll: proc.killAll };
}

async function sample(rig: Rig): Promise<{ cpu: number[]; syscalls: number }> {
  const cpu: number[] = [];
  let syscalls = 0;
  for (const hop of rig.hops) {
    cpu.push((await cpuMs(hop.pid)) ?? Number.NaN);
    const io = await syscallCounts(hop.pid);
    syscalls += io === null ? Number.NaN : io.reads + io.writes;
  }
  return { cpu, syscalls };
}

/** Whether the workload's CPU is per request or message (µs) rather than per MB (ms). */
const perItem = (workload: Workload) => !(workload === 'download' || workload === 'upload');

/** One measured run on `rig`: its units (requests, messages or MB), its rate, and the echo's p99. */
async function load(rig: Rig, workload: Workload, seconds: number, bytes: number) {
  if (workload.startsWith('http-')) {
    const r = await runWrk(rig.port, Number(workload.slice('http-c'.length)), seconds, rig.tls);
    if (r.errors > 0 || r.non2xx > 0) throw new Error(`wrk: ${r.errors} socket errors, ${r.non2xx} non-2xx`);
    return { units: r.requests, rate: r.rps, p99: Number.NaN };
  }
  if (workload.startsWith('ws-echo-')) {
    // The bench's own echo (bench/suite/client.ts): each connection sends one message and waits for
    // it back. The hops' CPU covers the whole call, so it is divided by every echo, the warm-up's
    // too; opening and closing the connections is in it as well, alike for both builds. An echo that
    // never came back fails the round.
    const args = { ...to(rig), conns: Number(workload.slice('ws-echo-'.length)), concurrency: 100 };
    const r = await rig.client.request(
      'wsEcho',
      { ...args, warmMs: 500, durationMs: seconds * 1000 },
      seconds * 1000 + 120_000,
    );
    if ((r.stuck as number) > 0) throw new Error(`ws echo: ${r.stuck} echoes never came back`);
    if (typeof r.echoes !== 'number')
      throw new Error(
        "ws echo: this build's bench client predates the echo count (b6476ba); build A from a later commit",
      );
    return { units: r.echoes as number, rate: r.msgPerSec as number, p99: r.p99ms as number };
  }
  const r = await rig.client.request(workload, { ...to(rig), bytes }, transferTimeout(bytes));
  return { units: bytes / MB, rate: r.MBps as number, p99: Number.NaN };
}

async function round(rig: Rig, workload: Workload, seconds: number, bytes: number): Promise<Round> {
  const before = await sample(rig);
  const { units, rate, p99 } = await load(rig, workload, seconds, bytes);
  const after = await sample(rig);
  // µs per request or message, or ms per MB: CPU ms × 1000 / requests, or CPU ms / MB.
  const scale = perItem(workload) ? 1000 : 1;
  const split = after.cpu.map((ms, i) => ((ms - before.cpu[i]!) * scale) / units);
  return {
    cpu: split.reduce((a, b) => a + b, 0),
    rate,
    p99,
    syscalls: (after.syscalls - before.syscalls) / units,
    split,
  };
}

/** One build's medians over its rounds. */
function side(dir: string, rounds: Round[]) {
  return {
    dir,
    cpu: median(rounds.map((r) => r.cpu)),
    rate: median(rounds.map((r) => r.rate)),
    p99: median(rounds.map((r) => r.p99)),
    syscalls: median(rounds.map((r) => r.syscalls)),
  };
}
const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—');

/** The command line, parsed; a flag parseArgs cannot take (an unknown one, `--idle -1`) is a usage error. */
function parseFlags() {
  try {
    return parseArgs({
      options: {
        a: { type: 'string' },
        b: { type: 'string', default: HERE },
        path: { type: 'string', default: 'sluice' },
        workload: { type: 'string', default: 'http-c50' },
        pairs: { type: 'string', default: '8' },
        seconds: { type: 'string', default: '3' },
        mb: { type: 'string', default: '256' },
        'fresh-rigs': { type: 'boolean', default: false },
        idle: { type: 'string', default: '0' },
      },
    });
  } catch (err) {
    return usage((err as Error).message);
  }
}

async function main(): Promise<void> {
  const { values } = parseFlags();
  if (values.a === undefined) usage('--a DIR is required: a built checkout to compare against');
  if (!(PATHS as readonly string[]).includes(values.path)) usage(`--path must be one of ${PATHS.join(', ')}`);
  const workload = values.workload as Workload;
  if (!WORKLOADS.includes(workload)) usage(`--workload must be one of ${WORKLOADS.join(', ')}`);
  const pairs = Number(values.pairs);
  const seconds = Number(values.seconds);
  const bytes = Number(values.mb) * MiB;
  // One rig per build for every pair compares the state each rig settled in (its GC mode on bulk
  // transfers, above all) as much as the builds; a fresh rig per round samples those states instead.
  const fresh = values['fresh-rigs'];
  // A gateway sits idle between transfers, and V8 uses the pause (its memory reducer): a rig that
  // idled before a bulk transfer may take it in another GC mode than one kept busy.
  const idleMs = Number(values.idle);
  if (!Number.isInteger(pairs) || pairs < 1 || pairs > 100) usage('--pairs must be an integer in 1..100');
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60)
    usage('--seconds must be an integer in 1..60');
  if (!Number.isInteger(bytes) || bytes < MiB || bytes > 4096 * MiB)
    usage('--mb must be an integer in 1..4096');
  if (!Number.isInteger(idleMs) || idleMs < 0 || idleMs > 60_000)
    usage('--idle must be an integer in 0..60000 (ms)');
  if (workload.startsWith('http-') && wrkBinary() === null) usage('wrk not found (apt-get install wrk)');

  const builds = [await loadBuild(values.a), await loadBuild(values.b)];
  installCleanup('bench:ab', WATCHDOG_MS);
  process.on('exit', () => builds.forEach((b) => b.killAll()));
  console.log(
    `bench:ab: ${workload} on ${values.path}, ${pairs} pairs${fresh ? ', a fresh rig per round' : ''}` +
      `${idleMs > 0 ? `, ${idleMs} ms idle before each` : ''}; ` +
      `A = ${builds[0]!.dir}, B = ${builds[1]!.dir}`,
  );
  const rigs: (Rig | null)[] = [null, null];
  const notes: string[] = [];
  // Fresh processes need a few rounds before they reach speed (JIT, pools, socket buffers).
  const start = async (k: number) => {
    rigs[k] = await builds[k]!.startRig(values.path, { fileLimit: 20_000 });
    for (let i = 0; i < 2; i++) await round(rigs[k]!, workload, seconds, bytes);
  };
  const stop = async (k: number) => {
    const rig = rigs[k] ?? null;
    rigs[k] = null;
    if (rig !== null) notes.push(...(await builds[k]!.stopRig(rig)));
  };
  try {
    if (!fresh) for (const k of [0, 1]) await start(k);
    const rounds: Round[][] = [[], []];
    for (let i = 0; i < pairs; i++) {
      for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) {
        if (fresh) await start(k);
        if (idleMs > 0) await sleep(idleMs);
        const r = await round(rigs[k]!, workload, seconds, bytes);
        rounds[k]!.push(r);
        const hops = rigs[k]!.hops.map((h, j) => `${h.role} ${fmt(r.split[j]!)}`).join(', ');
        console.log(
          `${'AB'[k]} pair ${i + 1}: cpu ${fmt(r.cpu)} (${hops}), rate ${fmt(r.rate, 0)}, ` +
            `${Number.isNaN(r.p99) ? '' : `p99 ${fmt(r.p99)} ms, `}syscalls ${fmt(r.syscalls, 2)}`,
        );
        if (fresh) await stop(k);
      }
    }
    const unit = workload.startsWith('http-') ? 'µs/req' : perItem(workload) ? 'µs/msg' : 'ms/MB';
    const ratios = rounds[0]!.map((a, i) => rounds[1]![i]!.cpu / a.cpu);
    const summary = {
      workload,
      path: values.path,
      pairs,
      unit,
      a: side(builds[0]!.dir, rounds[0]!),
      b: side(builds[1]!.dir, rounds[1]!),
      cpuRatio: median(ratios),
      cpuRatioMin: Math.min(...ratios),
      cpuRatioMax: Math.max(...ratios),
      rateRatio: median(rounds[0]!.map((a, i) => rounds[1]![i]!.rate / a.rate)),
      p99Ratio: median(rounds[0]!.map((a, i) => rounds[1]![i]!.p99 / a.p99)),
    };
    console.log(
      `median: A ${fmt(summary.a.cpu)} ${unit}, B ${fmt(summary.b.cpu)} ${unit}; B/A CPU ${fmt(summary.cpuRatio, 3)} ` +
        `(pairs ${fmt(summary.cpuRatioMin, 2)}–${fmt(summary.cpuRatioMax, 2)}), rate ${fmt(summary.rateRatio, 3)}; ` +
        (Number.isNaN(summary.p99Ratio) ? '' : `p99 ${fmt(summary.p99Ratio, 3)}; `) +
        `syscalls A ${fmt(summary.a.syscalls, 2)}, B ${fmt(summary.b.syscalls, 2)}`,
    );
    console.log(JSON.stringify(summary));
  } finally {
    for (const k of [0, 1]) await stop(k);
    for (const note of notes) console.log(`note: ${note}`);
  }
}

await main();
