// The proxy bench (`npm run bench`): the workloads of DESIGN §7 over four paths to the same origin,
// direct, nginx, node-proxy, sluice and sluice-peer, every process separate. See bench/README.md.
//   node dist/bench/run.js [--quick | --smoke] [--only WORKLOADS] [--paths PATHS] [--out DIR]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCleanup, killAll, openFileLimit } from './common/proc.js';
import { opensslBinary } from './suite/cert.js';
import { TLS_PATHS } from './suite/common.js';
import { h2loadBinary } from './suite/h2load.js';
import { haproxyBinary } from './suite/haproxy.js';
import { nginxBinary } from './suite/nginx.js';
import { type Plan, plan, type WorkloadName } from './suite/plan.js';
import { redisBenchmarkBinary } from './suite/redis-benchmark.js';
import { redisBinary } from './suite/redis.js';
import {
  type Figure,
  figures,
  LEGEND,
  markdownTable,
  nginxTlsVersus,
  type PeerComparison,
  peerComparisons,
  peerMarkdown,
  peerTerminal,
  peerVerdict,
  tcpVerdict,
  tcpVersus,
  terminalTable,
  tlsVersus,
  type Versus,
  versusMarkdown,
  versusTerminal,
} from './suite/report.js';
import { type Rounds, runWorkload, workloadPaths } from './suite/runner.js';
import { sshBinary, sshdBinary } from './suite/ssh.js';
import { wrkBinary } from './suite/wrk.js';

// Smoke runs every workload on five paths: about 90 s idle, more than 3 min with one core busy.
const WATCHDOG_MS = { full: 25 * 60_000, quick: 8 * 60_000, smoke: 6 * 60_000 };
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_DIR = join(REPO, 'bench', 'results');

/** The tools the selected paths and workloads need; a missing one is an error before anything runs. */
function missingTools(p: Plan): string[] {
  const missing: string[] = [];
  const ran = (w: WorkloadName) => p.workloads.includes(w) && workloadPaths(w, p).length > 0;
  if ((p.paths.includes('nginx') || p.paths.includes('nginx-tls')) && nginxBinary() === null)
    missing.push('nginx (apt-get install nginx-light)');
  if (p.paths.some((path) => TLS_PATHS.includes(path)) && opensslBinary() === null)
    missing.push('openssl (apt-get install openssl)');
  if (p.workloads.some((w) => w.startsWith('h2-') && ran(w)) && h2loadBinary() === null)
    missing.push('h2load (apt-get install nghttp2-client)');
  if (p.paths.includes('haproxy') && haproxyBinary() === null)
    missing.push('haproxy (apt-get install haproxy)');
  if (ran('redis') && (redisBinary() === null || redisBenchmarkBinary() === null))
    missing.push('redis-server and redis-benchmark (apt-get install redis-server)');
  if (p.paths.includes('ssh') && (sshdBinary() === null || sshBinary() === null))
    missing.push('sshd and ssh (apt-get install openssh-server openssh-client)');
  if (p.paths.includes('sluice-peer') && redisBinary() === null)
    missing.push('redis-server (apt-get install redis-server)');
  const wrkNeeded = p.workloads.some((w) => w.startsWith('http-'));
  if (wrkNeeded && wrkBinary() === null) missing.push('wrk (apt-get install wrk)');
  return missing;
}

/** The first line a tool prints about its version (nginx -v writes to stderr; wrk -v exits 1). */
function version(file: string | null, args: string[]): string | null {
  if (file === null) return null;
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] || null;
}

/** The commit measured, and whether tracked files differed from it (someone's work in progress). */
function commit(): string {
  try {
    const git = (args: string[]) => execFileSync('git', ['-C', REPO, ...args], { encoding: 'utf8' }).trim();
    const head = git(['rev-parse', '--short=12', 'HEAD']);
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    return dirty ? `${head} plus uncommitted changes` : head;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

function machine(fileLimit: number) {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    nginx: version(nginxBinary(), ['-v']),
    wrk: version(wrkBinary(), ['-v'])?.split(' Copyright')[0] ?? null,
    openFileLimit: fileLimit,
  };
}

function command(): string {
  const args = process.argv.slice(2).join(' ');
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench${args === '' ? '' : ` -- ${args}`}`;
  return `node dist/bench/run.js${args === '' ? '' : ` ${args}`}`;
}

/** A full run of everything writes bench/results/; anything less writes to a temp dir, never there. */
async function outDir(p: Plan): Promise<string> {
  if (p.out !== null) return p.out;
  if (p.sizes.mode === 'full' && p.complete) return RESULTS_DIR;
  return mkdtemp(join(os.tmpdir(), `sluice-bench-${p.sizes.mode}-`));
}

interface Report {
  date: string;
  mode: string;
  command: string;
  commit: string;
  durationS: number;
  machine: ReturnType<typeof machine>;
  loadAverage: { start: number[]; end: number[] };
  settings: Plan['sizes'];
  paths: Plan['paths'];
  workloads: Plan['workloads'];
  figures: Figure[];
  /** sluice-peer against sluice in this run; null unless both ran. */
  peerHop: { comparisons: PeerComparison[]; verdict: string | null } | null;
  /** sluice-tls against sluice and nginx-tls in this run; null unless sluice-tls ran. */
  tls: Versus[] | null;
  /** nginx-tls against nginx in this run (what TLS costs the baseline); null unless both ran. */
  tlsNginx: Versus[] | null;
  /** Sluice's TCP route against ssh -R, haproxy and direct; null unless a TCP workload ran on sluice. */
  tcp: { comparisons: Versus[]; verdict: string | null } | null;
  notes: string[];
  failures: string[];
}

function markdown(r: Report, figs: Figure[]): string {
  const m = r.machine;
  const list = (items: string[]) => (items.length === 0 ? 'None.' : items.map((n) => `- ${n}`).join('\n'));
  return `# Sluice bench: ${r.mode} run

- Date: ${r.date}
- Command: \`${r.command}\`
- Commit: ${r.commit}
- Duration: ${Math.round(r.durationS)} s
- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}
- Node ${m.node}; ${m.nginx ?? 'no nginx'}; ${m.wrk ?? 'no wrk'}; open-file limit ${m.openFileLimit}
- Load average (1, 5, 15 min) at start ${r.loadAverage.start.join(', ')}, at end ${r.loadAverage.end.join(', ')}

${markdownTable(figs)}

${list(LEGEND)}
${peerSection(r, peerMarkdown)}${versusSections(r, versusMarkdown)}
See bench/README.md for what each workload does and how to read it.

## Failures

${list(r.failures)}

## Notes

${list(r.notes)}
`;
}

/** The peer hop's table and verdict, or nothing when sluice and sluice-peer did not both run. */
function peerSection(r: Report, render: (c: PeerComparison[]) => string): string {
  if (r.peerHop === null) return '';
  const heading = 'The peer hop: sluice-peer against sluice, same run';
  return `\n## ${heading}\n\n${render(r.peerHop.comparisons)}\n\n${r.peerHop.verdict ?? 'No req/s or MB/s row.'}\n`;
}

/** The TLS and TCP comparisons (issues #14 and #15), each when its paths ran. */
function versusSections(r: Report, render: (v: Versus[], path: string) => string): string {
  let out = '';
  if (r.tls !== null && r.tls.length > 0) {
    out += '\n## TLS: sluice-tls against sluice and nginx-tls, same run\n\n';
    out += `${render(r.tls, 'sluice-tls')}\n\nHTTP/2 rows are over sluice's HTTP/1.1 row of the same workload.\n`;
  }
  if (r.tlsNginx !== null && r.tlsNginx.length > 0) {
    out += '\n## TLS on the baseline: nginx-tls against nginx, same run\n\n';
    out += `${render(r.tlsNginx, 'nginx-tls')}\n\nHTTP/2 rows are over nginx's HTTP/1.1 row of the same workload.\n`;
  }
  if (r.tcp !== null && r.tcp.comparisons.length > 0) {
    out += "\n## TCP: Sluice's TCP route against ssh -R, haproxy and direct, same run\n\n";
    out += `${render(r.tcp.comparisons, 'sluice')}\n\n${r.tcp.verdict ?? 'No bulk or ping-pong row on ssh.'}\n`;
  }
  return out;
}

async function main(): Promise<void> {
  const p = plan(process.argv.slice(2));
  installCleanup('bench', WATCHDOG_MS[p.sizes.mode]);
  const missing = missingTools(p);
  if (missing.length > 0) {
    console.error(`bench: missing ${missing.join(', ')}`);
    process.exit(1);
  }
  const fileLimit = await openFileLimit();
  const started = performance.now();
  const loadStart = os.loadavg().map((n) => Math.round(n * 100) / 100);
  console.log(`bench: ${p.sizes.mode} run, ${p.workloads.join(', ')} on ${p.paths.join(', ')}`);
  const rounds: Rounds = {};
  const notes: string[] = [];
  const failures: string[] = [];
  for (const w of p.workloads) {
    if (workloadPaths(w, p).length === 0) {
      notes.push(`${w}: skipped, it runs on none of the selected paths`);
      continue;
    }
    const t = performance.now();
    const r = await runWorkload(w, p, { sizes: p.sizes, fileLimit });
    for (const [path, byKey] of Object.entries(r.rounds))
      Object.assign((rounds[path as 'direct'] ??= {}), byKey);
    // A note every round repeats (a missing agent flag) is worth one line.
    for (const note of r.notes) if (!notes.includes(note)) notes.push(note);
    failures.push(...r.failures);
    progress(w, r.rounds, r.failures.length, performance.now() - t);
  }
  const figs = figures(p.sizes, rounds, p.paths);
  const comparisons = peerComparisons(figs);
  const bothSluice = p.paths.includes('sluice') && p.paths.includes('sluice-peer');
  const report: Report = {
    date: new Date().toISOString(),
    mode: p.sizes.mode,
    command: command(),
    commit: commit(),
    durationS: (performance.now() - started) / 1000,
    machine: machine(fileLimit),
    loadAverage: { start: loadStart, end: os.loadavg().map((n) => Math.round(n * 100) / 100) },
    settings: p.sizes,
    paths: p.paths,
    workloads: p.workloads,
    figures: figs,
    peerHop: bothSluice ? { comparisons, verdict: peerVerdict(comparisons) } : null,
    tls: p.paths.includes('sluice-tls') ? tlsVersus(figs) : null,
    tlsNginx: p.paths.includes('nginx-tls') && p.paths.includes('nginx') ? nginxTlsVersus(figs) : null,
    tcp: tcpReport(figs),
    notes,
    failures,
  };
  const dir = await outDir(p);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(dir, 'latest.md'), markdown(report, figs));
  const failed = failures.length === 0 ? '' : `\nFailures:\n${failures.join('\n')}\n`;
  console.log(
    `\n${terminalTable(figs)}\n\n${LEGEND.join('\n')}\n${peerSection(report, peerTerminal)}${versusSections(report, versusTerminal)}${failed}`,
  );
  console.log(`bench: ${Math.round(report.durationS)} s; wrote ${join(dir, 'latest.json')} and latest.md`);
  process.exit(failures.length > 0 ? 1 : 0);
}

function tcpReport(figs: Figure[]): Report['tcp'] {
  const comparisons = tcpVersus(figs);
  return comparisons.length === 0 ? null : { comparisons, verdict: tcpVerdict(comparisons) };
}

function progress(w: WorkloadName, r: Rounds, failed: number, ms: number): void {
  const parts = Object.entries(r).map(([path, byKey]) => {
    const first = Object.entries(byKey)[0];
    const values = first?.[1].map((v) => (v === null ? '—' : Math.round(v * 100) / 100)).join('/') ?? '';
    return `${path} ${first?.[0] ?? ''}=${values}`;
  });
  const fails = failed > 0 ? `, ${failed} FAILED` : '';
  console.log(`[${w}] ${parts.join('; ')} (${(ms / 1000).toFixed(1)} s${fails})`);
}

main().catch((err: Error) => {
  console.error(`bench: ${err.stack}`);
  killAll();
  process.exit(1);
});
