// The results: one row per figure, one column per path, each cell the median of its rounds and its
// ratio to `direct`. Printed as a terminal table and written as latest.json and latest.md.
import { median } from '../common/stats.js';
import { PATHS, type PathName } from './common.js';
import type { Sizes } from './plan.js';
import type { Rounds } from './runner.js';

export interface Row {
  key: string;
  label: string;
  unit: string;
  /** A smaller figure is better (latency, memory, time). */
  lower: boolean;
}

function size(bytes: number): string {
  const GiB = 1024 ** 3;
  return bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / 1024 ** 2} MiB`;
}

export function rows(s: Sizes): Row[] {
  const row = (key: string, label: string, unit: string, lower = false): Row => ({ key, label, unit, lower });
  const http = (c: number): Row[] => [
    row(`httpC${c}Rps`, `HTTP GET /small, c=${c}`, 'req/s'),
    row(`httpC${c}P50Ms`, `HTTP GET /small, c=${c}, p50`, 'ms', true),
    row(`httpC${c}P99Ms`, `HTTP GET /small, c=${c}, p99`, 'ms', true),
  ];
  const ws = (key: string, conns: number): Row[] => [
    row(`${key}MsgPerSec`, `WebSocket echo, ${conns} conns`, 'msg/s'),
    row(`${key}P50Ms`, `WebSocket echo, ${conns} conns, p50 RTT`, 'ms', true),
    row(`${key}P99Ms`, `WebSocket echo, ${conns} conns, p99 RTT`, 'ms', true),
  ];
  return [
    ...http(10),
    ...http(100),
    row('downloadMBps', `download ${size(s.bulkBytes)}`, 'MB/s'),
    row('uploadMBps', `upload ${size(s.bulkBytes)}`, 'MB/s'),
    row('parallel8MBps', `${s.parallelStreams} parallel downloads of ${size(s.parallelBytes)}`, 'MB/s'),
    ...ws('wsEcho100', s.wsConns.small),
    ...ws('wsEcho1000', s.wsConns.large),
    row('idleWsOriginKiB', `idle WebSockets (${s.idleConns}): RSS/conn, origin`, 'KiB', true),
    row('idleWsProxyKiB', 'idle WebSockets: RSS/conn, proxy or controller', 'KiB', true),
    row('idleWsAgentKiB', 'idle WebSockets: RSS/conn, sluice agent', 'KiB', true),
    row('slowPeakProxyMB', 'slow reader: peak RSS, proxy or controller', 'MB', true),
    row('slowPeakAgentMB', 'slow reader: peak RSS, sluice agent', 'MB', true),
    row('slowFastMBps', `slow reader: fast download of ${size(s.fastBytes)} beside it`, 'MB/s'),
    row('deadTunnelDetectMs', `dead tunnel detected (ping ${s.pingIntervalMs / 1000} s)`, 'ms', true),
    row('deadTunnelDetectIntervals', 'dead tunnel detected, in ping intervals', 'intervals', true),
    row('agentRestartMs', 'agent restart: spawn to first 200', 'ms', true),
  ];
}

export interface Figure extends Row {
  values: Partial<Record<PathName, number | null>>;
  ratios: Partial<Record<PathName, number | null>>;
  rounds: Partial<Record<PathName, (number | null)[]>>;
}

export function figures(s: Sizes, rounds: Rounds, paths: PathName[]): Figure[] {
  const out: Figure[] = [];
  for (const row of rows(s)) {
    const f: Figure = { ...row, values: {}, ratios: {}, rounds: {} };
    for (const path of paths) {
      const all = rounds[path]?.[row.key];
      if (all === undefined) continue;
      const numbers = all.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
      f.rounds[path] = all;
      f.values[path] = numbers.length === 0 ? null : median(numbers);
    }
    const base = f.values.direct;
    for (const path of paths) {
      const v = f.values[path];
      f.ratios[path] = typeof v === 'number' && typeof base === 'number' && base !== 0 ? v / base : null;
    }
    if (Object.keys(f.rounds).length > 0) out.push(f);
  }
  return out;
}

/** Three significant digits, thousands grouped: 123,456 / 1,234 / 12.3 / 1.23 / 0.123. */
export function fmt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const abs = Math.abs(n);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function cell(f: Figure, path: PathName): string {
  if (!(path in f.rounds)) return '';
  const v = f.values[path];
  if (path === 'direct' || v === null || v === undefined) return fmt(v);
  const r = f.ratios[path];
  return r === null || r === undefined ? fmt(v) : `${fmt(v)} (${r.toFixed(2)}×)`;
}

function shownPaths(figs: Figure[]): PathName[] {
  return PATHS.filter((p) => figs.some((f) => p in f.rounds));
}

export function terminalTable(figs: Figure[]): string {
  const paths = shownPaths(figs);
  const header = ['figure', 'unit', ...paths];
  const body = figs.map((f) => [f.label, f.unit, ...paths.map((p) => cell(f, p))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cols: string[]) =>
    cols.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), '-'.repeat(widths.reduce((a, b) => a + b + 2, -2)), ...body.map(line)].join('\n');
}

export function markdownTable(figs: Figure[]): string {
  const paths = shownPaths(figs);
  const out = [`| figure | unit | ${paths.join(' | ')} |`, `|---|---|${paths.map(() => '---:').join('|')}|`];
  for (const f of figs) out.push(`| ${f.label} | ${f.unit} | ${paths.map((p) => cell(f, p)).join(' | ')} |`);
  return out.join('\n');
}

export const LEGEND = [
  'Each cell is the median of its rounds, and in brackets its ratio to `direct` (client straight to origin).',
  'req/s, msg/s and MB/s: higher is better, and a ratio below 1 is what the hop costs.',
  'Latency, memory and time: lower is better, and a ratio above 1 is what the hop costs.',
  '"Proxy or controller" is nginx, node-proxy or Sluice\'s controller; only the origin has a `direct` memory figure.',
  'The recovery rows are Sluice only.',
];
