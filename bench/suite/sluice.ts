// The `sluice` path: the real controller and agent, from bin/sluice.js, as two processes with the
// bench's Node flags, the tunnel over tcp://127.0.0.1. Everything listens on port 0.
//
// The processes run at `logLevel: warn`, so that one JSON line per request does not cost the proxy
// its speed; readiness lines are written at any level, and give the listeners' ports. Tunnels are
// counted on the admin listener's /readyz. The tunnel-down lines the recovery workloads wait for need
// `info`.
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS, Proc, readLines } from '../common/proc.js';
import { sleep, withTimeout } from '../common/stats.js';
import type { CertPair } from './cert.js';
import { BENCH_HOST, HOST, SMALL_BODY } from './common.js';

const BIN = fileURLToPath(new URL('../../../bin/sluice.js', import.meta.url));
const TOKEN = 'bench-token-0123456789abcdef';
const READY_TIMEOUT_MS = 15_000;
export const TUNNELS = 2;

export type LogLine = Record<string, unknown> & { event?: string };

/** A sluice process whose stdout JSON lines are kept, with the time each one arrived. */
export class SluiceProc extends Proc {
  readonly lines: { at: number; line: LogLine }[] = [];
  errorText = '';
  readonly #waiters = new Set<(entry: { at: number; line: LogLine }) => void>();

  constructor(name: string, args: string[]) {
    super(name, process.execPath, [...NODE_FLAGS, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    readLines(this.stdout!, (raw) => this.#line(raw));
    this.stderr!.setEncoding('utf8').on('data', (t: string) => {
      this.errorText = (this.errorText + t).slice(-4000);
    });
  }

  /** Resolves with the arrival time (performance.now()) of the `count`-th line matching `match`. */
  waitLines(what: string, match: (l: LogLine) => boolean, count: number, timeoutMs: number): Promise<number> {
    const seen = this.lines.filter((e) => match(e.line));
    if (seen.length >= count) return Promise.resolve(seen[count - 1]!.at);
    let n = seen.length;
    let waiter: (entry: { at: number; line: LogLine }) => void = () => {};
    const found = new Promise<number>((resolve) => {
      waiter = (entry) => {
        if (match(entry.line) && ++n === count) resolve(entry.at);
      };
      this.#waiters.add(waiter);
    });
    const died = this.exited.then((exit) => {
      throw new Error(`${this.name} exited (code ${exit.code}) before ${what}: ${this.errorText.trim()}`);
    });
    return withTimeout(Promise.race([found, died]), timeoutMs, `${this.name}: ${what}`).finally(() =>
      this.#waiters.delete(waiter),
    );
  }

  #line(raw: string): void {
    if (raw.trim() === '') return;
    let line: LogLine;
    try {
      line = JSON.parse(raw) as LogLine;
    } catch {
      line = { msg: raw };
    }
    const entry = { at: performance.now(), line };
    this.lines.push(entry);
    for (const waiter of this.#waiters) waiter(entry);
  }
}

export interface ControllerOptions {
  logLevel: 'warn' | 'info';
  /** The YAML `tunnel:` section, e.g. { pingInterval: '1s', pingTimeout: '3s' }. */
  tunnel?: Record<string, string>;
  /** The process's name in notes and errors; `controller` unless given. */
  name?: string;
  /** A fleet member (the `sluice-peer` path): the shared store and the port its peer listener binds. */
  fleet?: { store: string; peerPort: number };
  /** The `sluice-tls` path: a TLS listener on port 0 with this pair. */
  tls?: CertPair;
  /** The TCP workloads: one TCP route on port 0 to this port on 127.0.0.1 (docs/tcp.md). */
  tcpTargetPort?: number;
}

/** The flags that make a controller a fleet member: the same YAML, plus a store and a peer listener. */
function fleetFlags(o: ControllerOptions): string[] {
  if (o.fleet === undefined) return [];
  const peer = `${HOST}:${o.fleet.peerPort}`;
  return ['--store', o.fleet.store, '--peer-listen', peer, '--peer-advertise', `tcp://${peer}`];
}

function controllerYaml(dir: string, originPort: number, o: ControllerOptions): string {
  const lines = [
    '# Written by bench/suite/sluice.ts for one bench run.',
    `listen: ${HOST}:0`,
    `tunnelListen: tcp://${HOST}:0`,
    `adminListen: ${HOST}:0`,
    `dataDir: ${JSON.stringify(dir)}`,
    `logLevel: ${o.logLevel}`,
    'clusters:',
    '  - name: bench',
    `    tokens: [${JSON.stringify(TOKEN)}]`,
    'routes:',
    `  - host: ${BENCH_HOST}`,
    '    cluster: bench',
    `    target: http://${HOST}:${originPort}`,
  ];
  // The same for requests: h2load's 100 connections of 10 streams each are 1,000 requests in flight
  // from one address, over the per-client cap (256), which would answer the rest 429.
  lines.push('http:', '  maxRequestsPerClient: 0');
  if (o.tls !== undefined) {
    lines.push('tls:', `  listen: ${HOST}:0`, '  certs:');
    lines.push(`    - { cert: ${JSON.stringify(o.tls.cert)}, key: ${JSON.stringify(o.tls.key)} }`);
  }
  if (o.tcpTargetPort !== undefined) {
    lines.push('tcpRoutes:', `  - listen: ${HOST}:0`, '    cluster: bench');
    lines.push(`    target: tcp://${HOST}:${o.tcpTargetPort}`);
    // Every load generator connects from 127.0.0.1, one address standing for many clients: the
    // per-client cap (64) would refuse redis-benchmark's next 50 connections while Sluice still
    // counts its last 50, whose closes are passing the tunnel. 0: no cap.
    lines.push('tcp:', '  maxConnectionsPerClient: 0');
  }
  if (o.tunnel !== undefined) {
    lines.push('tunnel:');
    for (const [key, value] of Object.entries(o.tunnel)) lines.push(`  ${key}: ${value}`);
  }
  return `${lines.join('\n')}\n`;
}

export interface Controller {
  proc: SluiceProc;
  publicPort: number;
  tunnelPort: number;
  adminPort: number;
  /** The TLS listener's and the TCP route's ports: 0 when the YAML has none. */
  tlsPort: number;
  tcpPort: number;
  /** The YAML, for the notes. */
  yaml: string;
}

export async function startController(
  dir: string,
  originPort: number,
  o: ControllerOptions,
): Promise<Controller> {
  const yaml = controllerYaml(dir, originPort, o);
  const file = join(dir, 'sluice.yaml');
  await writeFile(file, yaml);
  const proc = new SluiceProc(o.name ?? 'controller', ['controller', '--config', file, ...fleetFlags(o)]);
  try {
    const listeners = ['public', 'tunnel', 'admin'];
    if (o.tls !== undefined) listeners.push('tls');
    if (o.tcpTargetPort !== undefined) listeners.push('tcp');
    const ports = await Promise.all(listeners.map((listener) => listeningPort(proc, listener)));
    const at = (listener: string) => ports[listeners.indexOf(listener)] ?? 0;
    return {
      proc,
      yaml,
      publicPort: at('public'),
      tunnelPort: at('tunnel'),
      adminPort: at('admin'),
      tlsPort: at('tls'),
      tcpPort: at('tcp'),
    };
  } catch (err) {
    await proc.stop(1000);
    throw err;
  }
}

/** The port a listener reports in its readiness line (DESIGN §5), written at any log level. */
async function listeningPort(proc: SluiceProc, listener: string): Promise<number> {
  const match = (l: LogLine) => l.event === 'listening' && l.listener === listener;
  await proc.waitLines(`the ${listener} listener`, match, 1, READY_TIMEOUT_MS);
  const line = proc.lines.find((e) => match(e.line))!.line;
  return Number(new URL(String(line.url)).port);
}

interface Answer {
  port: number;
  status: number;
  body: string;
}

/** GET `path` on `port` with the bench's Host; null when what comes back is not HTTP (the tunnel listener). */
function ask(port: number, path: string, timeoutMs: number): Promise<Answer | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    let text = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      resolve(m === null ? null : { port, status: Number(m[1]), body });
    };
    const timer = setTimeout(done, timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (t: string) => (text += t));
    socket.on('error', () => {});
    socket.on('close', done);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${BENCH_HOST}\r\nConnection: close\r\n\r\n`);
  });
}

// The body comes chunked; the count is all that is needed from it.
const TUNNELS_FIELD = /"tunnels":(\d+)/;

function isAdmin(a: Answer): boolean {
  return a.status === 200 && TUNNELS_FIELD.test(a.body);
}

/** Tunnels the controller counts now, from the admin listener's /readyz. */
export async function tunnelCount(adminPort: number): Promise<number> {
  const a = await ask(adminPort, '/readyz', 2000);
  if (a === null || !isAdmin(a)) throw new Error(`admin /readyz answered ${JSON.stringify(a)}`);
  return Number(TUNNELS_FIELD.exec(a.body)![1]);
}

export async function waitTunnels(adminPort: number, n: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last = -1;
  while (performance.now() < deadline) {
    last = await tunnelCount(adminPort);
    if (last === n) return;
    await sleep(10);
  }
  throw new Error(`controller: ${last} tunnels, not ${n}, after ${timeoutMs} ms`);
}

/**
 * Waits until the public listener on `port` answers GET /small with the origin's body: on a fleet
 * member without the tunnels, once Redis presence says which peer holds them (503 until then).
 */
export async function waitServes(name: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last: Answer | null = null;
  for (let n = 0; performance.now() < deadline && n < 10_000; n++) {
    last = await ask(port, '/small', 2000);
    if (last?.status === 200 && last.body.endsWith(SMALL_BODY)) return;
    await sleep(50);
  }
  const said = last === null ? 'no HTTP answer' : `${last.status} ${JSON.stringify(last.body.slice(0, 200))}`;
  throw new Error(`${name} does not serve ${BENCH_HOST} after ${timeoutMs} ms: ${said}`);
}

let agentHelp: string | null = null;

/** Whether this build's `sluice agent` takes `flag` (its --help names it). */
export function agentTakes(flag: string): boolean {
  try {
    agentHelp ??= execFileSync(process.execPath, [BIN, 'agent', '--help'], {
      encoding: 'utf8',
      timeout: 15_000,
    });
  } catch {
    agentHelp = '';
  }
  return agentHelp.includes(flag);
}

export function startAgent(tunnelPort: number, logLevel: 'warn' | 'info', extra: string[] = []): SluiceProc {
  return new SluiceProc('agent', [
    'agent',
    '--controller',
    `tcp://${HOST}:${tunnelPort}`,
    '--token',
    TOKEN,
    '--allow',
    `${HOST}:*`,
    '--tunnels',
    String(TUNNELS),
    '--name',
    'bench',
    '--log-level',
    logLevel,
    ...extra,
  ]);
}
