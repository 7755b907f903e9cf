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
    row(`httpC${c}CpuUs`, `HTTP GET /small, c=${c}, hops' CPU per request`, 'µs', true),
  ];
  const cpuPerMB = (key: string, what: string) =>
    row(`${key}CpuMsPerMB`, `${what}, hops' CPU per MB`, 'ms', true);
  const h2 = (c: number): Row[] => [
    row(`h2C${c}Rps`, `HTTP/2 GET /small, c=${c} m=10`, 'req/s'),
    row(`h2C${c}MeanMs`, `HTTP/2 GET /small, c=${c} m=10, mean`, 'ms', true),
    row(`h2C${c}CpuUs`, `HTTP/2 GET /small, c=${c} m=10, hops' CPU per request`, 'µs', true),
  ];
  const ws = (key: string, conns: number): Row[] => [
    row(`${key}MsgPerSec`, `WebSocket echo, ${conns} conns`, 'msg/s'),
    row(`${key}P50Ms`, `WebSocket echo, ${conns} conns, p50 RTT`, 'ms', true),
    row(`${key}P99Ms`, `WebSocket echo, ${conns} conns, p99 RTT`, 'ms', true),
    row(`${key}CpuUs`, `WebSocket echo, ${conns} conns, hops' CPU per echo`, 'µs', true),
  ];
  return [
    ...http(10),
    ...http(50),
    ...http(100),
    row('downloadMBps', `download ${size(s.bulkBytes)}`, 'MB/s'),
    cpuPerMB('download', 'download'),
    row('uploadMBps', `upload ${size(s.bulkBytes)}`, 'MB/s'),
    cpuPerMB('upload', 'upload'),
    row('parallel8MBps', `${s.parallelStreams} parallel downloads of ${size(s.parallelBytes)}`, 'MB/s'),
    cpuPerMB('parallel8', 'parallel downloads'),
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
    ...h2(10),
    ...h2(100),
    row('h2DownloadMBps', `HTTP/2 download ${size(s.bulkBytes)}`, 'MB/s'),
    cpuPerMB('h2Download', 'HTTP/2 download'),
    row('tcpBulkMBps', `TCP bulk ${size(s.bulkBytes)}`, 'MB/s'),
    cpuPerMB('tcpBulk', 'TCP bulk'),
    row('tcpPingPongRtps', `TCP ping-pong 64 B, c=${s.pingPongConns}`, 'rt/s'),
    row('tcpPingPongP50Ms', `TCP ping-pong 64 B, c=${s.pingPongConns}, p50 RTT`, 'ms', true),
    row('tcpPingPongP99Ms', `TCP ping-pong 64 B, c=${s.pingPongConns}, p99 RTT`, 'ms', true),
    row('tcpPingPongCpuUs', "TCP ping-pong, hops' CPU per round trip", 'µs', true),
    row('redisSetOps', `redis-benchmark SET, c=50, n=${s.redisRequests}`, 'ops/s'),
    row('redisGetOps', `redis-benchmark GET, c=50, n=${s.redisRequests}`, 'ops/s'),
    row('redisGetP50Ms', 'redis-benchmark GET, p50', 'ms', true),
    row('redisGetP99Ms', 'redis-benchmark GET, p99', 'ms', true),
    row('redisCpuUs', "redis-benchmark, hops' CPU per op", 'µs', true),
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

/** Columns padded to their widest cell: the first two left-aligned, the numbers right-aligned. */
function aligned(header: string[], body: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cols: string[]) =>
    cols
      .map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), '-'.repeat(widths.reduce((a, b) => a + b + 2, -2)), ...body.map(line)].join('\n');
}

function markdownRows(header: string[], body: string[][]): string {
  const out = [
    `| ${header.join(' | ')} |`,
    `|---|---|${header
      .slice(2)
      .map(() => '---:')
      .join('|')}|`,
  ];
  for (const cols of body) out.push(`| ${cols.join(' | ')} |`);
  return out.join('\n');
}

function table(figs: Figure[]): { header: string[]; body: string[][] } {
  const paths = shownPaths(figs);
  const body = figs.map((f) => [f.label, f.unit, ...paths.map((p) => cell(f, p))]);
  return { header: ['figure', 'unit', ...paths], body };
}

export function terminalTable(figs: Figure[]): string {
  const t = table(figs);
  return aligned(t.header, t.body);
}

export function markdownTable(figs: Figure[]): string {
  const t = table(figs);
  return markdownRows(t.header, t.body);
}

// --- the peer hop: sluice-peer against sluice ---

/** What the peer hop may cost against `sluice` in the same run (issue #13), by unit. */
export const PEER_LIMITS: Readonly<Record<string, number>> = { 'req/s': 0.25, 'MB/s': 0.3 };

export interface PeerComparison {
  key: string;
  label: string;
  unit: string;
  sluice: number;
  peer: number;
  /** sluice-peer / sluice. */
  ratio: number;
  /** What the extra hop costs: the share of throughput lost, or the share of latency, memory or CPU added. */
  cost: number;
  /** The most it may cost, for req/s and MB/s rows; null where the issue sets no target. */
  limit: number | null;
}

/** Every figure both Sluice paths have, as sluice-peer's ratio to sluice. */
export function peerComparisons(figs: Figure[]): PeerComparison[] {
  const out: PeerComparison[] = [];
  for (const f of figs) {
    const sluice = f.values.sluice;
    const peer = f.values['sluice-peer'];
    if (typeof sluice !== 'number' || typeof peer !== 'number' || sluice === 0) continue;
    const ratio = peer / sluice;
    const cost = f.lower ? ratio - 1 : 1 - ratio;
    out.push({
      key: f.key,
      label: f.label,
      unit: f.unit,
      sluice,
      peer,
      ratio,
      cost,
      limit: PEER_LIMITS[f.unit] ?? null,
    });
  }
  return out;
}

const pct = (n: number) => `${Math.round(n * 100)}%`;

/** One line: whether the peer hop is within its target on every measured req/s and MB/s row. */
export function peerVerdict(c: PeerComparison[]): string | null {
  const targeted = c.filter((x) => x.limit !== null);
  if (targeted.length === 0) return null;
  const over = targeted.filter((x) => x.cost > x.limit!);
  const target = `at most ${pct(PEER_LIMITS['req/s']!)} of req/s and ${pct(PEER_LIMITS['MB/s']!)} of MB/s`;
  if (over.length === 0) return `Peer hop target (${target}): met on all ${targeted.length} rows.`;
  const which = over.map((x) => `${x.label} costs ${pct(x.cost)} (limit ${pct(x.limit!)})`).join('; ');
  return `Peer hop target (${target}): NOT met on ${over.length} of ${targeted.length} rows: ${which}.`;
}

function peerTable(c: PeerComparison[]): { header: string[]; body: string[][] } {
  const header = ['figure', 'unit', 'sluice', 'sluice-peer', 'peer/sluice', 'hop costs', 'target'];
  const body = c.map((x) => [
    x.label,
    x.unit,
    fmt(x.sluice),
    fmt(x.peer),
    `${x.ratio.toFixed(2)}×`,
    pct(x.cost),
    x.limit === null ? '' : `≤ ${pct(x.limit)}: ${x.cost <= x.limit ? 'met' : 'NOT met'}`,
  ]);
  return { header, body };
}

export function peerTerminal(c: PeerComparison[]): string {
  const t = peerTable(c);
  return aligned(t.header, t.body);
}

export function peerMarkdown(c: PeerComparison[]): string {
  const t = peerTable(c);
  return markdownRows(t.header, t.body);
}

export const LEGEND = [
  'Each cell is the median of its rounds, and in brackets its ratio to `direct` (client straight to origin).',
  'req/s, msg/s and MB/s: higher is better, and a ratio below 1 is what the hop costs.',
  'Latency, memory and time: lower is better, and a ratio above 1 is what the hop costs.',
  '"Proxy or controller" is nginx, node-proxy, the sshd session or Sluice\'s controller; only the origin has a `direct` memory figure.',
  "CPU rows: user plus system time of the path's hops (not the origin or the load generator) from /proc/PID/stat, over the measured run, divided by its requests or MB.",
  'The recovery rows are Sluice only; `sluice-peer` is client → controller B → peer → controller A → agent.',
];

// --- Sluice against named baselines: the TLS paths (issue #14) and the TCP route (issue #15) ---

/** One of `path`'s figures, with its ratio to each baseline's figure from the same run. */
export interface Versus {
  key: string;
  label: string;
  unit: string;
  lower: boolean;
  value: number;
  /** By baseline path: `value` over the baseline's figure; null where the baseline has none. */
  ratios: Record<string, number | null>;
}

/**
 * The HTTP/2 figures have no plain-`sluice` twin of their own (there is no h2 without TLS): they are
 * compared with the HTTP/1.1 figure of the same workload, which is what moving to TLS and h2 costs.
 */
const H1_TWIN: Readonly<Record<string, string>> = {
  h2C10Rps: 'httpC10Rps',
  h2C10CpuUs: 'httpC10CpuUs',
  h2C100Rps: 'httpC100Rps',
  h2C100CpuUs: 'httpC100CpuUs',
  h2DownloadMBps: 'downloadMBps',
  h2DownloadCpuMsPerMB: 'downloadCpuMsPerMB',
};

export function versus(
  figs: Figure[],
  path: PathName,
  baselines: { path: PathName; twins?: Readonly<Record<string, string>> }[],
  keys: (key: string) => boolean = () => true,
): Versus[] {
  const byKey = new Map(figs.map((f) => [f.key, f]));
  const out: Versus[] = [];
  for (const f of figs) {
    const value = f.values[path];
    if (typeof value !== 'number' || !keys(f.key)) continue;
    const ratios: Record<string, number | null> = {};
    for (const b of baselines) {
      const twin = byKey.get(b.twins?.[f.key] ?? f.key);
      const base = twin?.values[b.path];
      ratios[b.path] = typeof base === 'number' && base !== 0 ? value / base : null;
    }
    out.push({ key: f.key, label: f.label, unit: f.unit, lower: f.lower, value, ratios });
  }
  return out;
}

/** sluice-tls against plain sluice (h2 rows against their h1 twins) and against nginx-tls. */
export function tlsVersus(figs: Figure[]): Versus[] {
  return versus(figs, 'sluice-tls', [{ path: 'sluice', twins: H1_TWIN }, { path: 'nginx-tls' }]);
}

/** nginx-tls against plain nginx, h2 rows against their h1 twins: what TLS costs the baseline. */
export function nginxTlsVersus(figs: Figure[]): Versus[] {
  return versus(figs, 'nginx-tls', [{ path: 'nginx', twins: H1_TWIN }]);
}

const TCP_KEY = /^(tcp|redis)/;

/** Sluice's TCP route against ssh -R, haproxy and direct, on the TCP workloads' rows. */
export function tcpVersus(figs: Figure[]): Versus[] {
  const baselines = (['ssh', 'haproxy', 'direct'] as const).map((path) => ({ path }));
  return versus(figs, 'sluice', baselines, (key) => TCP_KEY.test(key));
}

/** Issue #15's target: on TCP bulk MB/s and ping-pong round trips/s, sluice ≥ ssh -R. */
export function tcpVerdict(v: Versus[]): string | null {
  const rows = v.filter((x) => x.key === 'tcpBulkMBps' || x.key === 'tcpPingPongRtps');
  const judged = rows.filter((x) => typeof x.ratios.ssh === 'number');
  if (judged.length === 0) return null;
  const parts = judged.map((x) => `${x.label} ${x.ratios.ssh!.toFixed(2)}× ssh -R`);
  const met = judged.every((x) => x.ratios.ssh! >= 1);
  const missing = judged.length < 2 ? ' (only one of the two rows ran)' : '';
  return `TCP route target (Sluice at least matches ssh -R on bulk and ping-pong): ${met ? 'met' : 'NOT met'}${missing}: ${parts.join('; ')}.`;
}

function versusTable(v: Versus[], path: string): { header: string[]; body: string[][] } {
  const baselines = [...new Set(v.flatMap((x) => Object.keys(x.ratios)))];
  const header = ['figure', 'unit', path, ...baselines.map((b) => `${path} / ${b}`)];
  const body = v.map((x) => [
    x.label,
    x.unit,
    fmt(x.value),
    ...baselines.map((b) => {
      const r = x.ratios[b];
      return typeof r === 'number' ? `${r.toFixed(2)}×` : '—';
    }),
  ]);
  return { header, body };
}

export function versusTerminal(v: Versus[], path: string): string {
  const t = versusTable(v, path);
  return aligned(t.header, t.body);
}

export function versusMarkdown(v: Versus[], path: string): string {
  const t = versusTable(v, path);
  return markdownRows(t.header, t.body);
}
