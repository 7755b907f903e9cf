// `npm run bench:ab` works end to end: this checkout against itself, one pair of one-second wrk runs
// one pair of 4 MiB uploads on fresh rigs and one pair of one-second WebSocket echoes. It asserts that the run completes, prints its summary with a ratio
// for each figure, and leaves no process behind; the figures of so short a run mean nothing. Bad
// flags exit 2 with a line that says what is wrong, before anything starts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { wrkBinary } from '../../bench/suite/wrk.js';
import { type Ran, runNode } from '../helpers/run-node.js';

const AB = fileURLToPath(new URL('../../bench/ab.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LIMIT_MS = 150_000;

interface Summary {
  workload: string;
  pairs: number;
  a: { cpu: number; rate: number; syscalls: number };
  b: { cpu: number; rate: number; syscalls: number };
  cpuRatio: number;
  rateRatio: number;
  p99Ratio: number | null;
}

function ab(args: string[]): Promise<Ran> {
  return runNode(AB, args, LIMIT_MS);
}

function summary(output: string): Summary {
  const line = output.split('\n').find((l) => l.startsWith('{"workload"'));
  assert.ok(line !== undefined, `no JSON summary in:\n${output.slice(-4000)}`);
  return JSON.parse(line) as Summary;
}

function assertComplete(s: Summary, workload: string): void {
  assert.equal(s.workload, workload);
  assert.equal(s.pairs, 1);
  for (const side of [s.a, s.b]) {
    assert.ok(side.cpu > 0 && side.rate > 0 && side.syscalls > 0, JSON.stringify(side));
  }
  assert.ok(Number.isFinite(s.cpuRatio) && s.cpuRatio > 0, `cpuRatio ${s.cpuRatio}`);
  assert.ok(Number.isFinite(s.rateRatio) && s.rateRatio > 0, `rateRatio ${s.rateRatio}`);
}

const skip = wrkBinary() === null ? 'needs wrk: apt-get install wrk' : false;

/** One pair of `workload`, this checkout against itself: it must complete, and every child exit. */
async function onePair(workload: string, flags: string[]): Promise<{ output: string; s: Summary }> {
  const { code, output } = await ab([
    '--a',
    REPO,
    '--b',
    REPO,
    '--workload',
    workload,
    '--pairs',
    '1',
    ...flags,
  ]);
  assert.equal(code, 0, output.slice(-4000));
  const s = summary(output);
  assertComplete(s, workload);
  assert.doesNotMatch(output, /^note: /m, 'a process did not exit cleanly');
  return { output, s };
}

test(
  'bench:ab compares two builds on small GETs, interleaved',
  { skip, timeout: LIMIT_MS + 10_000 },
  async () => {
    const { output } = await onePair('http-c10', ['--seconds', '1']);
    // Both orders of a pair ran: A then B.
    assert.match(output, /^A pair 1: cpu [\d.]+ \(controller [\d.]+, agent [\d.]+\)/m);
    assert.match(output, /^B pair 1: /m);
  },
);

test(
  'bench:ab compares two builds on an upload, with a fresh rig per round and a pause before it',
  { timeout: LIMIT_MS + 10_000 },
  async () => {
    const { output } = await onePair('upload', ['--mb', '4', '--fresh-rigs', '--idle', '300']);
    assert.match(output, /a fresh rig per round, 300 ms idle before each/);
  },
);

test(
  'bench:ab compares two builds on WebSocket echo, with the p99',
  { timeout: LIMIT_MS + 10_000 },
  async () => {
    const { output, s } = await onePair('ws-echo-100', ['--seconds', '1']);
    assert.ok(s.p99Ratio !== null && Number.isFinite(s.p99Ratio) && s.p99Ratio > 0, `p99Ratio ${s.p99Ratio}`);
    assert.match(output, /^A pair 1: cpu [\d.]+ .*, p99 [\d.]+ ms, syscalls/m);
    assert.match(output, /µs\/msg/);
  },
);

test('bench:ab refuses bad flags before it starts anything', async () => {
  const cases: [string[], RegExp][] = [
    [[], /--a DIR is required/],
    [['--a', '/nonexistent-sluice-build'], /has no dist\/bench\/suite\/rig\.js/],
    [['--a', REPO, '--workload', 'ws-idle'], /--workload must be one of/],
    [['--a', REPO, '--path', 'sluice-fast'], /--path must be one of/],
    [['--a', REPO, '--pairs', '0'], /--pairs must be an integer in 1\.\.100/],
    [['--a', REPO, '--mb', 'lots'], /--mb must be an integer/],
    [['--a', REPO, '--idle', '-1'], /Option '--idle' argument is ambiguous/],
    [['--a', REPO, '--idle=-1'], /--idle must be an integer in 0\.\.60000/],
    [['--a', REPO, '--idle', 'soon'], /--idle must be an integer in 0\.\.60000/],
    [['--a', REPO, '--fast'], /Unknown option '--fast'/],
  ];
  for (const [args, said] of cases) {
    const { code, output } = await ab(args);
    assert.equal(code, 2, `${args.join(' ')}: ${output}`);
    assert.match(output, said);
    assert.match(output, /^usage: node dist\/bench\/ab\.js/m);
  }
});
