// The proxy bench's harness works end to end: one very short round of every workload on every path
// (`--smoke`, bench/README.md), the fleet's `sluice-peer` among them. It asserts only that the run
// completes and writes its JSON with figures for every path and the peer hop's comparison; the
// figures of so short a run mean nothing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PATHS } from '../../bench/suite/common.js';
import { nginxBinary } from '../../bench/suite/nginx.js';
import { redisBinary } from '../../bench/suite/redis.js';
import { sshBinary, sshdBinary } from '../../bench/suite/ssh.js';
import { wrkBinary } from '../../bench/suite/wrk.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));
/** Past the bench's own smoke watchdog (6 min), so that it reports first. */
const LIMIT_MS = 380_000;

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
  'the bench runs every workload on every path in --smoke mode',
  { skip, timeout: LIMIT_MS + 10_000 },
  async () => {
    const out = mkdtempSync(join(tmpdir(), 'sluice-bench-smoke-'));
    try {
      const child = spawn(process.execPath, [RUN, '--smoke', '--out', out], {
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: LIMIT_MS,
      });
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
      child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      assert.equal(code, 0, `the smoke run failed:\n${output.slice(-6000)}`);
      const report = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as {
        mode: string;
        figures: { key: string; values: Record<string, number | null> }[];
        peerHop: { comparisons: { key: string }[]; verdict: string | null } | null;
      };
      assert.equal(report.mode, 'smoke');
      assert.ok(report.figures.length > 0, 'latest.json has no figures');
      const rps = report.figures.find((f) => f.key === 'httpC10Rps');
      for (const path of PATHS) assert.ok((rps?.values[path] ?? 0) > 0, `no c=10 req/s on ${path}`);
      // The peer hop against sluice: a ratio for the req/s and MB/s rows, and the target's verdict.
      const compared = report.peerHop?.comparisons.map((c) => c.key) ?? [];
      for (const key of ['httpC10Rps', 'downloadMBps', 'httpC10CpuUs'])
        assert.ok(compared.includes(key), `peerHop lacks ${key}: ${compared.join(', ')}`);
      assert.match(report.peerHop?.verdict ?? '', /^Peer hop target .*: (met|NOT met)/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
);
