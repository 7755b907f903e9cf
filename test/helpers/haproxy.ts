// A real haproxy (Debian's, installed by .ci/run) in front of several controllers, for the fleet's
// tests: one frontend on a port of 127.0.0.1, one backend server per controller, health-checked on the
// controller's admin /readyz, with retries and redispatch so that a draining controller's refused
// connections go to another one, as a production load balancer is set up. It retries only what never
// reached a controller's edge (a refused connection, a connection closed before any byte of answer),
// never a 503 or a timeout, so that it cannot hide a request Sluice failed. Ready when its frontend
// accepts connections; the servers' states come from its stats socket, never from a sleep.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { READY_MS, scaled } from './wait.js';

export interface Backend {
  readonly name: string;
  /** The controller's public HTTP port. */
  readonly port: number;
  /** Its admin port, where haproxy checks /readyz. */
  readonly checkPort: number;
}

const running = new Set<ChildProcess>();
const inTestFile =
  process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? '');
if (inTestFile) {
  after(() => {
    for (const child of running) child.kill('SIGKILL');
  });
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Debian puts it in /usr/sbin, which a non-root PATH may lack. */
function haproxyBinary(): string {
  return existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : 'haproxy';
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The configuration: HTTP mode, checks every 200 ms, down after 1 failure, up after 1 success. */
export function haproxyConfig(port: number, socket: string, backends: readonly Backend[]): string {
  const servers = backends
    .map((b) => `  server ${b.name} 127.0.0.1:${b.port} check port ${b.checkPort} inter 200ms fall 1 rise 1`)
    .join('\n');
  return `global
  stats socket ${socket} mode 600 level admin
  maxconn 4096

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option http-server-close
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response

frontend public
  bind 127.0.0.1:${port}
  default_backend controllers

backend controllers
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
${servers}
`;
}

export class Haproxy {
  readonly port: number;
  readonly #dir: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  log = '';

  private constructor(port: number, dir: string, child: ChildProcess) {
    this.port = port;
    this.#dir = dir;
    this.#child = child;
    running.add(child);
    this.#exited = once(child, 'exit').then(() => {
      running.delete(child);
    });
    const collect = (chunk: Buffer): void => {
      this.log += chunk.toString();
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get #socket(): string {
    return join(this.#dir, 'admin.sock');
  }

  static start(backends: readonly Backend[]): Promise<Haproxy> {
    return Haproxy.startWith((port, socket) => haproxyConfig(port, socket, backends));
  }

  /**
   * An haproxy with the configuration `config` writes for the frontend port and the stats socket it
   * is given; ready when that port accepts connections (tests of other setups, e.g. accept-proxy).
   */
  static async startWith(config: (port: number, socket: string) => string): Promise<Haproxy> {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-haproxy-'));
    const port = await freePort();
    const file = join(dir, 'haproxy.cfg');
    writeFileSync(file, config(port, join(dir, 'admin.sock')));
    const child = spawn(haproxyBinary(), ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const proxy = new Haproxy(port, dir, child);
    let exited = false;
    void proxy.#exited.then(() => (exited = true));
    const deadline = Date.now() + scaled(READY_MS);
    for (let attempt = 0; attempt < 10_000; attempt++) {
      if (exited) throw new Error(`haproxy exited before it was ready:\n${proxy.log}`);
      if (await accepts(port)) return proxy;
      if (Date.now() > deadline) break;
      await sleep(50);
    }
    child.kill('SIGKILL');
    throw new Error(`haproxy did not accept connections within ${scaled(READY_MS)}ms:\n${proxy.log}`);
  }

  /** Waits until haproxy's checks see each named server in `state` (e.g. all `UP`). */
  async waitForStates(want: ReadonlyMap<string, string>, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + scaled(timeoutMs);
    let states = new Map<string, string>();
    for (let attempt = 0; attempt < 10_000; attempt++) {
      states = await this.serverStates();
      if ([...want].every(([name, state]) => (states.get(name) ?? '').startsWith(state))) return;
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    throw new Error(`haproxy servers ${JSON.stringify([...states])}, wanted ${JSON.stringify([...want])}`);
  }

  /** The state haproxy's checks give each server: `UP`, `DOWN`, `MAINT`, …, by server name. */
  async serverStates(): Promise<Map<string, string>> {
    const text = await this.command('show stat');
    const states = new Map<string, string>();
    const lines = text.split('\n');
    const header = (lines[0] ?? '').replace(/^# /, '').split(',');
    const name = header.indexOf('svname');
    const status = header.indexOf('status');
    for (const line of lines.slice(1)) {
      const fields = line.split(',');
      if (fields[0] !== 'controllers') continue;
      const server = fields[name];
      if (server !== undefined && server !== 'BACKEND') states.set(server, fields[status] ?? '');
    }
    return states;
  }

  /** One command on the stats socket, e.g. `show stat`. */
  command(text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.#socket);
      let out = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (out += chunk));
      socket.once('error', reject);
      socket.once('end', () => resolve(out));
      socket.end(`${text}\n`);
    });
  }

  async stop(): Promise<void> {
    this.#child.kill('SIGTERM');
    await this.#exited;
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
