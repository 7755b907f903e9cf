// The proxy bench's harness works end to end: one very short round of every HTTP workload on every
// HTTP path (`--smoke`, bench/README.md), the fleet's `sluice-peer` among them; then the TLS paths
// (issue #14) and the TCP paths (issue #15) in runs of their own, each a few seconds. It asserts only
// that each run completes and writes its JSON with figures for every path it ran and the comparisons
// the report makes; the figures of so short a run mean nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { opensslBinary } from '../../bench/suite/cert.js';
import { h2loadBinary } from '../../bench/suite/h2load.js';
import { haproxyBinary } from '../../bench/suite/haproxy.js';
import { nginxBinary } from '../../bench/suite/nginx.js';
import { redisBenchmarkBinary } from '../../bench/suite/redis-benchmark.js';
import { redisBinary } from '../../bench/suite/redis.js';
import { sshBinary, sshdBinary } from '../../bench/suite/ssh.js';
import { wrkBinary } from '../../bench/suite/wrk.js';
import { runNode } from '../helpers/run-node.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
/** Past the bench's own smoke watchdog (6 min), so that it reports first. */
const LIMIT_MS = 380_000;

/** A smoke run of the TLS or TCP paths: well under the 20 s each may take, even on a busy machine. */
const SHORT_LIMIT_MS = 120_000;

/** The HTTP paths and workloads, as the bench had them before the TLS and TCP paths came. */
const HTTP_PATHS = ['direct', 'nginx', 'node-proxy', 'ssh', 'sluice', 'sluice-peer'];
const HTTP_WORKLOADS = [
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
];

interface Versus {
  key: string;
  value: number;
  ratios: Record<string, number | null>;
}

interface SmokeReport {
  mode: string;
  figures: { key: string; values: Record<string, number | null> }[];
  peerHop: { comparisons: { key: string }[]; verdict: string | null } | null;
  tls: Versus[] | null;
  tcp: { comparisons: Versus[]; verdict: string | null } | null;
}

/** `node dist/bench/run.js --smoke ARGS` to its end: exit code 0, and the JSON it wrote. */
async function smoke(args: string[], limitMs: number): Promise<SmokeReport> {
  const out = mkdtempSync(join(tmpdir(), 'sluice-bench-smoke-'));
  try {
    const { code, output } = await runNode(RUN, ['--smoke', ...args, '--out', out], limitMs);
    assert.equal(code, 0, `the smoke run failed:\n${output.slice(-6000)}`);
    const report = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as SmokeReport;
    assert.equal(report.mode, 'smoke');
    assert.ok(report.figures.length > 0, 'latest.json has no figures');
    return report;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** Every `path` has a positive figure for each of `keys`. */
function assertFigures(report: SmokeReport, keys: string[], paths: string[]): void {
  for (const key of keys) {
    const f = report.figures.find((x) => x.key === key);
    for (const path of paths) assert.ok((f?.values[path] ?? 0) > 0, `no ${key} on ${path}`);
  }
}

/** The comparison has a ratio to `baseline` for each of `keys`. */
function assertRatios(v: Versus[] | null | undefined, keys: string[], baseline: string): void {
  for (const key of keys) {
    const row = v?.find((x) => x.key === key);
    const r = row?.ratios[baseline];
    assert.ok(typeof r === 'number' && r > 0, `no ${key} ratio to ${baseline}: ${JSON.stringify(row)}`);
  }
}

function skipWithout(tools: Record<string, string | null>, install: string): string | false {
  const absent = Object.entries(tools).flatMap(([tool, file]) => (file === null ? [tool] : []));
  return absent.length === 0 ? false : `needs ${absent.join(', ')}: apt-get install ${install}`;
}

const tools = {
  nginx: nginxBinary(),
  wrk: wrkBinary(),
  'redis-server': redisBinary(),
  sshd: sshdBinary(),
  ssh: sshBinary(),
};
const missing = Object.entries(tools).flatMap(([tool, file]) => (file === null ? [tool] : []));
const skip =
  missing.length === 0
    ? false
    : `needs ${missing.join(', ')}: apt-get install nginx-light wrk redis-server openssh-server`;

test(
  'the bench runs every HTTP workload on every HTTP path in --smoke mode',
  { skip, timeout: LIMIT_MS + 10_000 },
  async () => {
    const args = ['--paths', HTTP_PATHS.join(','), '--only', HTTP_WORKLOADS.join(',')];
    const report = await smoke(args, LIMIT_MS);
    assertFigures(report, ['httpC10Rps'], HTTP_PATHS);
    // Every path with hops has a CPU figure per WebSocket echo; direct has no hops to count.
    assertFigures(report, ['wsEcho100CpuUs', 'wsEcho1000CpuUs'], HTTP_PATHS.slice(1));
    // The peer hop against sluice: a ratio for the req/s and MB/s rows, and the target's verdict.
    const compared = report.peerHop?.comparisons.map((c) => c.key) ?? [];
    for (const key of ['httpC10Rps', 'downloadMBps', 'httpC10CpuUs'])
      assert.ok(compared.includes(key), `peerHop lacks ${key}: ${compared.join(', ')}`);
    assert.match(report.peerHop?.verdict ?? '', /^Peer hop target .*: (met|NOT met)/);
  },
);

const TLS_PATHS = ['nginx-tls', 'sluice-tls'];
const skipTls = skipWithout(
  { nginx: nginxBinary(), wrk: wrkBinary(), openssl: opensslBinary() },
  'nginx-light wrk openssl',
);

test(
  'the TLS paths serve GETs (wrk over https), a download and wss:// echo over HTTP/1.1',
  { skip: skipTls, timeout: SHORT_LIMIT_MS + 10_000 },
  async () => {
    const args = ['--paths', TLS_PATHS.join(','), '--only', 'http-c10,download,ws-echo-100'];
    const report = await smoke(args, SHORT_LIMIT_MS);
    const keys = [
      'httpC10Rps',
      'httpC10CpuUs',
      'downloadMBps',
      'downloadCpuMsPerMB',
      'wsEcho100MsgPerSec',
      'wsEcho100CpuUs',
    ];
    assertFigures(report, keys, TLS_PATHS);
    assertRatios(report.tls, keys, 'nginx-tls');
  },
);

test(
  'the TLS paths serve GETs (h2load) and a download over HTTP/2, against plain sluice over HTTP/1.1',
  {
    skip: skipTls || skipWithout({ h2load: h2loadBinary() }, 'nghttp2-client'),
    timeout: SHORT_LIMIT_MS + 10_000,
  },
  async () => {
    // h2-c100 as well: its 100 handshakes are what hung h2load's -D runs (see test/bench/h2load.test.ts).
    const only = 'http-c10,h2-c10,h2-c100,h2-download';
    const report = await smoke(['--paths', `sluice,${TLS_PATHS.join(',')}`, '--only', only], SHORT_LIMIT_MS);
    const keys = [
      'h2C10Rps',
      'h2C10CpuUs',
      'h2C100Rps',
      'h2C100CpuUs',
      'h2DownloadMBps',
      'h2DownloadCpuMsPerMB',
    ];
    assertFigures(report, keys, TLS_PATHS);
    assertRatios(report.tls, keys, 'nginx-tls');
    // h2 over TLS against plain sluice's HTTP/1.1 figure of the same workload.
    assertRatios(report.tls, ['h2C10Rps', 'h2C10CpuUs'], 'sluice');
  },
);

const TCP_PATHS = ['direct', 'haproxy', 'ssh', 'sluice'];

test(
  'the TCP paths carry a bulk transfer and 64 B ping-pong: direct, haproxy, ssh -R and a Sluice TCP route',
  {
    skip: skipWithout(
      { haproxy: haproxyBinary(), sshd: sshdBinary(), ssh: sshBinary() },
      'haproxy openssh-server',
    ),
    timeout: SHORT_LIMIT_MS + 10_000,
  },
  async () => {
    const report = await smoke(
      ['--paths', TCP_PATHS.join(','), '--only', 'tcp-bulk,tcp-pingpong'],
      SHORT_LIMIT_MS,
    );
    assertFigures(report, ['tcpBulkMBps', 'tcpPingPongRtps', 'tcpPingPongP99Ms'], TCP_PATHS);
    assertFigures(report, ['tcpPingPongCpuUs'], TCP_PATHS.slice(1));
    assertRatios(report.tcp?.comparisons, ['tcpBulkMBps', 'tcpPingPongRtps'], 'ssh');
    assert.match(report.tcp?.verdict ?? '', /^TCP route target .*: (met|NOT met): /);
  },
);

test(
  'redis-benchmark runs straight to redis-server and through a Sluice TCP route',
  {
    skip: skipWithout(
      { 'redis-server': redisBinary(), 'redis-benchmark': redisBenchmarkBinary() },
      'redis-server',
    ),
    timeout: SHORT_LIMIT_MS + 10_000,
  },
  async () => {
    const report = await smoke(['--paths', 'direct,sluice', '--only', 'redis'], SHORT_LIMIT_MS);
    assertFigures(report, ['redisSetOps', 'redisGetOps', 'redisGetP99Ms'], ['direct', 'sluice']);
    assertFigures(report, ['redisCpuUs'], ['sluice']);
    assertRatios(report.tcp?.comparisons, ['redisSetOps', 'redisGetOps'], 'direct');
  },
);
