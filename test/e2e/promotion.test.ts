// What a finished request leaves for the old generation: a controller and an agent as real
// processes under --trace-gc-nvp, 50 kept-alive connections sending small GETs, one full GC forced
// half-way through each (/debug/memory, with --expose-gc), and the bytes each scavenge promoted,
// per request. A request's objects should die young; only what is in flight during a scavenge
// survives it, and that seldom lives on to a second one.
//
// Two defects made this figure large (bench/results/issue17-2026-12-07-promotion.md): a Map or Set
// with heavy churn (a session's streams, a listener's responses) keeps finished entries alive once a
// full GC has made its table old, and an options object spread from a shared part gets a fresh hidden
// class on every request. Before they were fixed the controller promoted about 3 KB per request after
// the first full GC; after, tens of bytes. The figure is a count of bytes, not of time: a slow
// machine makes requests slower, not longer-lived in scavenges.
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type LogLine, type SluiceProcess, Stack } from '../helpers/sluice-procs.js';
import { scaled, within } from '../helpers/wait.js';

const HOST = 'gc.test';
const CONNECTIONS = 50;
const REQUESTS = 10_000;
/** Per request, after a full GC; measured: 20–40 bytes, and 2,000–2,600 before the fix. */
const BOUND_BYTES = 400;
const GC_FLAGS = ['--expose-gc', '--trace-gc-nvp'];

/** Bytes promoted by the scavenges among `lines`, from --trace-gc-nvp's `gc=s ... promoted=N`. */
function promotedBytes(lines: readonly LogLine[]): { scavenges: number; bytes: number } {
  let scavenges = 0;
  let bytes = 0;
  for (const line of lines) {
    const text = line.unparsed === true ? String(line.msg) : '';
    if (!text.includes(' gc=s ')) continue;
    const m = / promoted=(\d+) /.exec(text);
    if (m === null) continue;
    scavenges++;
    bytes += Number(m[1]);
  }
  return { scavenges, bytes };
}

/** `count` GETs over CONNECTIONS kept-alive connections, each connection one request at a time. */
async function load(port: number, agent: Agent, count: number): Promise<void> {
  let left = count;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1',
        port,
        path: '/status?code=200',
        agent,
        headers: { host: HOST },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
        res.resume();
        res.on('end', resolve);
      });
      req.end();
    });
  const worker = async (): Promise<void> => {
    while (left > 0) {
      left--;
      await one();
    }
  };
  await within(
    Promise.all(Array.from({ length: CONNECTIONS }, worker)),
    scaled(120_000),
    `${count} requests`,
  );
}

async function forceFullGc(url: string): Promise<void> {
  const res = await fetch(new URL('/debug/memory', url));
  const report = (await res.json()) as { gc?: boolean };
  assert.equal(report.gc, true, 'the process runs with --expose-gc');
}

describe('what a finished request leaves for the old generation', () => {
  let origin: Origin;
  let stack: Stack;
  let agent: SluiceProcess;
  let healthUrl = '';
  const http = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });

  before(async () => {
    origin = await startOrigin();
    stack = await Stack.start({
      routes: [{ host: HOST, target: origin.url }],
      admin: true,
      agent: false,
      extraYaml: 'logLevel: warn',
      controllerNodeFlags: GC_FLAGS,
    });
    agent = await stack.spawnAgent({
      args: ['--health-listen', '127.0.0.1:0', '--log-level', 'warn'],
      nodeFlags: GC_FLAGS,
    });
    const health = await agent.waitLine(
      'health listener',
      (l) => l.event === 'listening' && l.listener === 'health',
    );
    healthUrl = String(health.url);
    // Warm: the code optimised, the containers through a few full GCs of their own.
    await load(stack.port, http, REQUESTS);
  });

  after(async () => {
    http.destroy();
    await stack?.stop();
    await origin?.close();
  });

  test('after a full GC, scavenges promote almost nothing of the requests', async (t) => {
    await Promise.all([forceFullGc(stack.adminUrl), forceFullGc(healthUrl)]);
    const from = { controller: stack.controller.lines.length, agent: agent.lines.length };
    await load(stack.port, http, REQUESTS);
    const sides = { controller: stack.controller, agent };
    for (const [name, proc] of Object.entries(sides)) {
      const { scavenges, bytes } = promotedBytes(proc.lines.slice(from[name as keyof typeof from]));
      const perRequest = bytes / REQUESTS;
      t.diagnostic(
        `${name}: ${scavenges} scavenges, ${bytes} bytes promoted, ${perRequest.toFixed(0)} per request`,
      );
      assert.ok(scavenges > 0, `${name}: no scavenge in ${REQUESTS} requests: is --trace-gc-nvp on?`);
      assert.ok(
        perRequest < BOUND_BYTES,
        `${name} promoted ${perRequest.toFixed(0)} bytes per request after a full GC (bound ${BOUND_BYTES})`,
      );
    }
  });
});
