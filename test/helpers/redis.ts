// A real redis-server (Debian's, installed by .ci/run) for the fleet's tests: one per call, on a port of
// 127.0.0.1 the system picked, with no persistence, in a temporary directory. It is ready when it logs
// that it accepts connections, never after a sleep. kill() and restart() play the outage tests' parts:
// a restart comes back on the same port, empty, as a Redis without persistence would.
//
// No server outlives its test file: a root `after` hook kills every one still running, also when a
// `before` threw, and the test process kills them on its way out.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { freePort } from './listen.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { READY_MS, scaled } from './wait.js';

const running = new Set<ChildProcess>();
let guarded = false;

function killAllNow(): void {
  for (const child of running) child.kill('SIGKILL');
}

const inTestFile =
  process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? '');
if (inTestFile) after(killAllNow);

export class RedisServer {
  readonly port: number;
  readonly url: string;
  readonly #dir: string;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  log = '';

  private constructor(port: number, dir: string) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.#dir = dir;
  }

  /** Starts a server; tries a few ports, should another process take the one picked first. */
  static async start(): Promise<RedisServer> {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-redis-'));
    let last: Error | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const server = new RedisServer(await freePort(), dir);
      try {
        await server.#spawn();
        return server;
      } catch (err) {
        last = err as Error;
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw last ?? new Error('redis-server did not start');
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** The child's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async #spawn(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { cwd: this.#dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    running.add(child);
    if (!guarded) {
      guarded = true;
      process.on('exit', killAllNow);
    }
    this.#child = child;
    const exited = once(child, 'exit').then(() => {
      running.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
    this.#exited = exited;
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        this.log += chunk.toString();
        if (this.log.includes('Ready to accept connections')) resolve();
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', reject);
      void exited.then(() => reject(new Error(`redis-server exited before it was ready:\n${this.log}`)));
    });
    const ms = scaled(READY_MS);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`redis-server not ready within ${ms}ms:\n${this.log}`)), ms);
    });
    try {
      await Promise.race([ready, late]);
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL, as a crash or an OOM kill: the data is gone with it. */
  async kill(): Promise<void> {
    this.#child?.kill('SIGKILL');
    await this.#exited;
  }

  /** Starts it again on the same port, after kill() or stop(). */
  async restart(): Promise<void> {
    if (this.#child !== undefined) throw new Error('redis-server is still running');
    await this.#spawn();
  }

  /** Stops it for good and removes its directory. */
  async stop(): Promise<void> {
    this.#child?.kill('SIGTERM');
    await this.#exited;
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
