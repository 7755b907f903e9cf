// The human table (pipe against sluice, per workload) and the one-line JSON summary.
import os from 'node:os';
import { round } from '../common/stats.js';
import type { Impl } from './rig.js';
import type { Metrics } from './workloads.js';

interface Row {
  label: string;
  key: string;
  digits: number;
  /** True when a smaller figure is better (latency, memory); the ratio is still sluice / pipe. */
  lower?: boolean;
}

const ROWS: Row[] = [
  { label: 'single stream (MB/s)', key: 'singleStreamMBps', digits: 1 },
  { label: 'parallel 8 streams (MB/s)', key: 'parallel8MBps', digits: 1 },
  { label: 'open + 100 B exchange, c=64 (ops/s)', key: 'openExchangePerSec', digits: 0 },
  { label: 'rtt 64 B, 16 streams, p50 (µs)', key: 'rttP50us', digits: 0, lower: true },
  { label: 'rtt 64 B, 16 streams, p99 (µs)', key: 'rttP99us', digits: 0, lower: true },
  { label: 'idle stream, controller relay (B)', key: 'idleController', digits: 0, lower: true },
  { label: 'idle stream, agent relay (B)', key: 'idleAgent', digits: 0, lower: true },
  { label: 'slow reader: peak relay RSS (MB)', key: 'slowReaderPeakRssMB', digits: 1, lower: true },
  { label: 'fast stream beside slow (MB/s)', key: 'fastStreamBesideSlowMBps', digits: 1 },
];

function cell(n: number | null | undefined, digits: number): string {
  const r = round(n, digits);
  return r === null ? '—' : r.toFixed(digits);
}

export function table(results: Partial<Record<Impl, Metrics>>): string {
  const pipe = results.pipe ?? {};
  const sluice = results.sluice ?? {};
  const width = Math.max(...ROWS.map((r) => r.label.length)) + 2;
  const line = (a: string, b: string, c: string, d: string) =>
    a.padEnd(width) + b.padStart(12) + c.padStart(12) + d.padStart(14);
  const out = [line('workload', 'pipe', 'sluice', 'sluice/pipe'), '-'.repeat(width + 38)];
  for (const row of ROWS) {
    const p = pipe[row.key];
    const s = sluice[row.key];
    const ratio = typeof p === 'number' && typeof s === 'number' && p !== 0 ? s / p : null;
    out.push(line(row.label, cell(p, row.digits), cell(s, row.digits), cell(ratio, 2)));
  }
  const ratio = ratioOf(sluice.singleStreamMBps, pipe.singleStreamMBps);
  out.push('', `singleStreamMBps / pipeMBps = ${cell(ratio, 2)}`);
  return out.join('\n');
}

function ratioOf(a: number | null | undefined, b: number | null | undefined): number | null {
  return typeof a === 'number' && typeof b === 'number' && b !== 0 ? a / b : null;
}

/** The summary line: sluice's figures (or pipe's when only pipe ran) with the pipe baseline. */
export function summary(results: Partial<Record<Impl, Metrics>>, quick: boolean): string {
  const impl: Impl = results.sluice !== undefined ? 'sluice' : 'pipe';
  const m = results[impl] ?? {};
  return JSON.stringify({
    impl,
    pipeMBps: round(results.pipe?.singleStreamMBps, 1),
    singleStreamMBps: round(m.singleStreamMBps, 1),
    parallel8MBps: round(m.parallel8MBps, 1),
    openExchangePerSec: round(m.openExchangePerSec),
    rttP50us: round(m.rttP50us),
    rttP99us: round(m.rttP99us),
    idleStreamBytes: { controller: round(m.idleController), agent: round(m.idleAgent) },
    slowReaderPeakRssMB: round(m.slowReaderPeakRssMB, 1),
    fastStreamBesideSlowMBps: round(m.fastStreamBesideSlowMBps, 1),
    quick,
    cores: os.availableParallelism(),
    date: new Date().toISOString(),
  });
}
