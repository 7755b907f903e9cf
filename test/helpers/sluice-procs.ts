// Real `sluice` child processes for end-to-end tests: spawned from bin/sluice.js, ready when their JSON
// readiness lines say so (DESIGN §5), never after a sleep. Also a small HTTP client that can set Host.
//
// No child may outlive its test file, whatever fails: every child is tracked from its spawn to its exit;
// a root `after` hook stops those still running (it runs even when a `before` threw, and before the
// file's own `after` hooks, whose stops then find nothing left to do); and should the test process end
// otherwise (process.exit, a signal from the test runner), the children are killed on the way out. A
// child carries its test process's pid in SLUICE_TEST_OWNER_PID, so that test/zz-leaks.test.ts can
// find one that outlived it all the same.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { READY_MS, within } from './wait.js';

export const BIN = fileURLToPath(new URL('../../../bin/sluice.js', import.meta.url));

export type LogLine = Record<string, unknown> & { msg?: string; event?: string };

/** The children of this process that have not exited yet. */
const running = new Set<SluiceProcess>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let guarded = false;

function killRunningNow(): void {
  for (const p of running) p.child.kill('SIGKILL');
}

function onSignal(signal: NodeJS.Signals): void {
  killRunningNow();
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  // With no other listener left, the signal's default action ends the process as it would have.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function track(p: SluiceProcess): void {
  running.add(p);
  void p.exited.then(() => running.delete(p));
  if (guarded) return;
  guarded = true;
  process.on('exit', killRunningNow);
  for (const s of SIGNALS) process.on(s, onSignal);
}

/** The sluice children still running (for a test that checks the guard itself). */
export function runningChildren(): readonly SluiceProcess[] {
  return [...running];
}

/** Stops every child still running: SIGTERM, then SIGKILL for one that does not exit in time. */
export async function stopAllChildren(): Promise<void> {
  await Promise.allSettled([...running].map((p) => p.stop()));
}

// Only in a test file: a script that borrows `ask` (test/tools/) must not start a test run.
const inTestFile =
  process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? '');
if (inTestFile) after(stopAllChildren);

export class SluiceProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  #waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  /** `nodeFlags` go to node before the script: V8 flags such as --trace-gc-nvp, which NODE_OPTIONS refuses. */
  constructor(args: string[], env: NodeJS.ProcessEnv = {}, nodeFlags: readonly string[] = []) {
    this.child = spawn(process.execPath, [...nodeFlags, BIN, ...args], {
      env: {
        ...process.env,
        SLUICE_TEST_OWNER_PID: String(process.pid),
        SLUICE_TEST_RUN_PID: String(process.ppid),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      const parts = (partial + text).split('\n');
      partial = parts.pop()!;
      for (const raw of parts) this.#line(raw);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      this.stderr += text;
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    // A child that could not be spawned at all emits 'error' and never 'exit'.
    this.child.once('error', (err) => {
      this.stderr += `spawn failed: ${err.message}\n`;
      running.delete(this);
    });
    track(this);
  }

  #line(raw: string): void {
    if (raw.trim() === '') return;
    let line: LogLine;
    try {
      line = JSON.parse(raw) as LogLine;
    } catch {
      line = { msg: raw, unparsed: true };
    }
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.match(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** The first line (already seen or still to come) that `match` accepts. */
  waitLine(what: string, match: (l: LogLine) => boolean, timeoutMs = READY_MS): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    const found = new Promise<LogLine>((resolve) => this.#waiters.push({ match, resolve }));
    const failed = this.exited.then((code) => {
      throw new Error(`process exited (${code}) before ${what}; stderr: ${this.stderr.slice(-2000)}`);
    });
    return within(Promise.race([found, failed]), timeoutMs, what);
  }

  /** Waits until `count` lines (already seen or still to come) match. */
  async waitCount(
    what: string,
    match: (l: LogLine) => boolean,
    count: number,
    timeoutMs = READY_MS,
  ): Promise<void> {
    let matched = 0;
    await this.waitLine(`${what} (${count} lines)`, (l) => match(l) && ++matched >= count, timeoutMs);
  }

  /** Resident set size in bytes, from /proc. */
  rss(): number {
    const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return kb === null ? 0 : Number(kb[1]) * 1024;
  }

  /** Sends `signal` and resolves with the exit code. Kills hard if it does not exit in time. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = READY_MS): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    try {
      return await within(this.exited, timeoutMs, 'process exit');
    } catch (err) {
      this.child.kill('SIGKILL');
      await this.exited;
      throw err;
    }
  }
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
}

export interface StackOptions {
  /** YAML `routes:` entries: host, path?, target (cluster defaults to `c1`). */
  routes: {
    host: string;
    path?: string;
    target: string;
    cluster?: string;
    serverName?: string;
    tls?: 'passthrough';
  }[];
  /** Extra top-level YAML (e.g. an `http:` section), appended verbatim. */
  extraYaml?: string;
  /** Agent --allow patterns; default `127.0.0.1:*`. */
  allow?: string[];
  tunnels?: number;
  /** false: start the controller only. */
  agent?: boolean;
  /** Tokens of cluster `c1`; default [TOKEN]. */
  tokens?: string[];
  /** The hosts cluster `c1` may claim by route discovery (`clusters[].hosts`); default none. */
  hosts?: string[];
  /** true: the admin listener on port 0 (`adminUrl`); default off. */
  admin?: boolean;
  /** Extra environment for the controller process (e.g. NODE_OPTIONS). */
  controllerEnv?: NodeJS.ProcessEnv;
  /** Flags for node itself in the controller process (e.g. --trace-gc-nvp). */
  controllerNodeFlags?: string[];
  /** How long each process may take to say it is ready; default READY_MS (scaled). */
  readyMs?: number;
}

/** One more agent process (a replica): see Stack.spawnAgent. */
export interface AgentOptions {
  /** Where it dials; default the controller's tunnel listener (a FaultProxy's `url` to break it). */
  controller?: string;
  tunnels?: number;
  allow?: string[];
  /** --name; default `e2e`. */
  name?: string;
  token?: string;
  /** Extra flags, e.g. ['--ping-interval', '500ms']. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Flags for node itself in the agent process (e.g. --trace-gc-nvp). */
  nodeFlags?: string[];
  /** false: return without waiting for the controller to register its tunnels. Default true. */
  wait?: boolean;
}

export const TOKEN = 'e2e-token-0123456789abcdef';

export class Stack {
  controller!: SluiceProcess;
  /** The agent started last. */
  agent: SluiceProcess | null = null;
  /** Every agent process started, running or not. */
  readonly agents: SluiceProcess[] = [];
  publicUrl = '';
  tunnelUrl = '';
  adminUrl = '';
  port = 0;
  #options!: StackOptions;
  #dir = '';

  static async start(options: StackOptions): Promise<Stack> {
    const stack = new Stack();
    stack.#options = options;
    stack.#dir = tempDir();
    try {
      await stack.startController();
      if (options.agent !== false) await stack.startAgent(options);
    } catch (err) {
      // The caller never gets the stack to stop: stop what did start before saying why it failed.
      await stack.stop();
      throw err;
    }
    return stack;
  }

  /**
   * Starts the controller and waits for its listeners. The first start binds port 0; a restart binds
   * the same ports again, so agents and clients find it where it was. `changes` alter the options for
   * this start and the later ones (e.g. other tokens).
   */
  async startController(changes: Partial<StackOptions> = {}): Promise<SluiceProcess> {
    const options = (this.#options = { ...this.#options, ...changes });
    const routes = options.routes
      .map((r) => {
        const path = r.path === undefined ? '' : `\n    path: ${JSON.stringify(r.path)}`;
        const sni = r.serverName === undefined ? '' : `\n    serverName: ${JSON.stringify(r.serverName)}`;
        const tls = r.tls === undefined ? '' : `\n    tls: ${r.tls}`;
        return `  - host: ${JSON.stringify(r.host)}${path}\n    cluster: ${r.cluster ?? 'c1'}\n    target: ${JSON.stringify(r.target)}${sni}${tls}`;
      })
      .join('\n');
    const restart = this.port !== 0;
    const tunnelPort = restart ? new URL(this.tunnelUrl).port : '0';
    const adminPort = this.adminUrl === '' ? '0' : new URL(this.adminUrl).port;
    const yaml = [
      `listen: 127.0.0.1:${this.port}`,
      `tunnelListen: tcp://127.0.0.1:${tunnelPort}`,
      options.admin === true ? `adminListen: 127.0.0.1:${adminPort}` : 'adminListen: off',
      `dataDir: ${JSON.stringify(this.#dir)}`,
      'clusters:',
      `  - name: c1\n    tokens: ${JSON.stringify(options.tokens ?? [TOKEN])}` +
        (options.hosts === undefined ? '' : `\n    hosts: ${JSON.stringify(options.hosts)}`),
      '  - name: empty\n    tokens: ["empty-cluster-token-0123456789"]',
      routes === '' ? 'routes: []' : `routes:\n${routes}`,
      options.extraYaml ?? '',
    ].join('\n');
    const file = join(this.#dir, 'sluice.yaml');
    writeFileSync(file, yaml);
    const controller = new SluiceProcess(
      ['controller', '--config', file],
      options.controllerEnv,
      options.controllerNodeFlags,
    );
    this.controller = controller;
    const pub = await controller.waitLine(
      'public listener',
      (l) => l.event === 'listening' && l.listener === 'public',
      options.readyMs,
    );
    const tun = await controller.waitLine(
      'tunnel listener',
      (l) => l.event === 'listening' && l.listener === 'tunnel',
      options.readyMs,
    );
    if (options.admin === true) {
      const admin = await controller.waitLine(
        'admin listener',
        (l) => l.event === 'listening' && l.listener === 'admin',
        options.readyMs,
      );
      this.adminUrl = String(admin.url);
    }
    this.publicUrl = String(pub.url);
    this.tunnelUrl = String(tun.url);
    this.port = Number(new URL(this.publicUrl).port);
    return controller;
  }

  async startAgent(options: Pick<StackOptions, 'allow' | 'tunnels'> = {}): Promise<SluiceProcess> {
    return this.spawnAgent(options);
  }

  /** Starts an agent process; by default waits until the controller has registered all its tunnels. */
  async spawnAgent(options: AgentOptions = {}): Promise<SluiceProcess> {
    const tunnels = options.tunnels ?? 2;
    const args = [
      'agent',
      '--controller',
      options.controller ?? this.tunnelUrl,
      '--tunnels',
      String(tunnels),
      '--name',
      options.name ?? 'e2e',
    ];
    for (const a of options.allow ?? ['127.0.0.1:*']) args.push('--allow', a);
    args.push(...(options.args ?? []));
    const controller = this.controller;
    const before = controller.lines.filter((l) => l.event === 'tunnel-up').length;
    const env = { SLUICE_TOKEN: options.token ?? TOKEN, ...options.env };
    const agent = new SluiceProcess(args, env, options.nodeFlags);
    this.agent = agent;
    this.agents.push(agent);
    if (options.wait !== false) {
      await controller.waitCount(
        'tunnels registered',
        (l) => l.event === 'tunnel-up',
        before + tunnels,
        this.#options.readyMs,
      );
    }
    return agent;
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.agents.map((a) => a.stop()), this.controller?.stop()]);
  }
}

export interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  trailers: Record<string, string | undefined>;
  body: Buffer;
}

export interface Ask {
  port: number;
  host: string;
  path?: string;
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer | Readable;
}

/**
 * One request to 127.0.0.1:port with the given Host; resolves with the whole (small) response. A
 * response still not whole after READY_MS (scaled) is an error, and its connection is destroyed: a hang
 * fails the test with what was asked instead of holding it until the runner's timeout.
 */
export function ask(a: Ask): Promise<Reply> {
  const req = request({
    host: '127.0.0.1',
    port: a.port,
    method: a.method ?? 'GET',
    path: a.path ?? '/',
    headers: { host: a.host, ...a.headers },
    agent: false,
  });
  const reply = new Promise<Reply>((resolve, reject) => {
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          trailers: res.trailers,
          body: Buffer.concat(chunks),
        }),
      );
    });
  });
  if (a.body === undefined || typeof a.body === 'string' || Buffer.isBuffer(a.body)) req.end(a.body);
  else a.body.pipe(req);
  const what = `the answer to ${a.method ?? 'GET'} http://${a.host}${a.path ?? '/'}`;
  return within(reply, READY_MS, what).catch((err: unknown) => {
    req.destroy();
    throw err;
  });
}

export function writeFile(dir: string, name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/**
 * A real `sluice controller` in `dir` with its admin listener up, one seeded cluster and no routes,
 * for tests of the admin API and CLI. The caller stops `controller` in its `after`.
 */
export async function startAdminController(
  dir: string,
  adminToken: string,
  seedToken: string,
): Promise<{ controller: SluiceProcess; adminUrl: string }> {
  const yaml = [
    'listen: 127.0.0.1:0',
    'tunnelListen: tcp://127.0.0.1:0',
    'adminListen: 127.0.0.1:0',
    `dataDir: ${JSON.stringify(join(dir, 'data'))}`,
    'clusters:',
    '  - name: seeded',
    `    tokens: [${JSON.stringify(seedToken)}]`,
    'routes: []',
  ].join('\n');
  const config = writeFile(dir, 'sluice.yaml', yaml);
  const controller = new SluiceProcess(['controller', '--config', config], {
    SLUICE_ADMIN_TOKEN: adminToken,
  });
  const ready = await controller.waitLine(
    'the admin listener',
    (l) => l.event === 'listening' && l.listener === 'admin',
    60_000,
  );
  return { controller, adminUrl: String(ready.url) };
}
