// The mux bench: the same workloads through a plain TCP pipe relay pair and through a Sluice
// session relay pair, each process separate. See bench/README.md.
//   node dist/bench/mux/run.js [--quick] [--impl pipe|sluice|both] [--only single,parallel8,...]
import { parseArgs } from 'node:util';
import type { Args } from '../common/ipc.js';
import { installCleanup, killAll, openFileLimit } from '../common/proc.js';
import { withTimeout } from '../common/stats.js';
import { summary, table } from './report.js';
import { type Impl, type Rig, startRig, stopRig } from './rig.js';
import {
  FULL,
  type Metrics,
  QUICK,
  relayNodeFlags,
  runWorkload,
  type Sizes,
  settle,
  WORKLOADS,
  type Workload,
} from './workloads.js';

const WATCHDOG_MS = { quick: 5 * 60_000, full: 25 * 60_000 };

interface Plan {
  sizes: Sizes;
  impls: Impl[];
  workloads: Workload[];
}

function usage(message: string): never {
  console.error(
    `${message}\nusage: run.js [--quick] [--impl pipe|sluice|both] [--only ${WORKLOADS.join(',')}]`,
  );
  process.exit(2);
}

function plan(): Plan {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      impl: { type: 'string', default: 'both' },
      only: { type: 'string' },
    },
  });
  const impl = values.impl;
  if (impl !== 'pipe' && impl !== 'sluice' && impl !== 'both') usage(`unknown --impl ${impl}`);
  const impls: Impl[] = impl === 'both' ? ['pipe', 'sluice'] : [impl];
  const only = values.only?.split(',').map((w) => w.trim()) ?? [...WORKLOADS];
  for (const w of only) if (!(WORKLOADS as readonly string[]).includes(w)) usage(`unknown workload ${w}`);
  return { sizes: values.quick ? QUICK : FULL, impls, workloads: only as Workload[] };
}

/** Sluice only: a graceful close must finish at once when no stream is open, on both sides. */
async function checkClose(rig: Rig): Promise<string[]> {
  try {
    const r = await rig.controller.request<Args>('closeSession', {}, 10_000);
    if (r.closed !== true) return [`close: no session to close (${r.error})`];
    await rig.agent.event('tunnel-closed', 5000);
    return [];
  } catch (err) {
    return [`close: ${(err as Error).message}`];
  }
}

function unexpectedEvents(rig: Rig): string[] {
  return [rig.controller, rig.agent].flatMap((c) =>
    c.events.filter((e) => e.name !== 'tunnel').map((e) => `${c.name}: ${e.name} ${e.error ?? ''}`),
  );
}

async function runOne(impl: Impl, w: Workload, p: Plan, fileLimit: number): Promise<[Metrics, string[]]> {
  const rig = await startRig(impl, relayNodeFlags(w));
  try {
    const outcome = await runWorkload(w, rig, p.sizes, fileLimit);
    const notes = [...outcome.notes, ...(await settle(rig, w)), ...unexpectedEvents(rig)];
    if (impl === 'sluice') notes.push(...(await checkClose(rig)));
    return [outcome.metrics, notes];
  } finally {
    await withTimeout(stopRig(rig), 10_000, 'stopping the rig').catch(killAll);
  }
}

function progress(impl: Impl, w: Workload, m: Metrics, ms: number): void {
  const figures = Object.entries(m)
    .map(([k, v]) => `${k}=${v === null ? '—' : Math.round(v * 10) / 10}`)
    .join(' ');
  console.log(`[${impl}] ${w}: ${figures} (${(ms / 1000).toFixed(1)} s)`);
}

async function main(): Promise<void> {
  const p = plan();
  installCleanup('mux bench', p.sizes.quick ? WATCHDOG_MS.quick : WATCHDOG_MS.full);
  const fileLimit = await openFileLimit();
  const results: Partial<Record<Impl, Metrics>> = {};
  const notes: string[] = [];
  let failed = 0;
  for (const impl of p.impls) {
    const metrics: Metrics = {};
    results[impl] = metrics;
    for (const w of p.workloads) {
      const start = performance.now();
      try {
        const [m, n] = await runOne(impl, w, p, fileLimit);
        Object.assign(metrics, m);
        notes.push(...n.map((line) => `[${impl}] ${line}`));
        progress(impl, w, m, performance.now() - start);
      } catch (err) {
        failed += 1;
        const message = (err as Error).message.split('\n').slice(0, 6).join('\n');
        notes.push(`[${impl}] ${w} FAILED: ${message}`);
        console.log(`[${impl}] ${w}: FAILED (${((performance.now() - start) / 1000).toFixed(1)} s)`);
      }
    }
  }
  console.log(`\n${notes.join('\n')}\n\n${table(results)}\n`);
  console.log(summary(results, p.sizes.quick));
  process.exit(failed > 0 ? 1 : 0);
}

main().catch((err: Error) => {
  console.error(`mux bench: ${err.stack}`);
  killAll();
  process.exit(1);
});
