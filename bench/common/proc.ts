// The orchestrator's side of the child processes. `Proc` is any process (nginx, wrk, sluice): spawn,
// watch its exit, stop it with SIGTERM then SIGKILL. `Child` is a Node child of ours that speaks IPC:
// wait for its ready message, send requests with a timeout. Whatever is left is killed on any exit.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Args, ChildMessage } from './ipc.js';

/** Every Node child runs with the same flags; --expose-gc lets `rss` collect garbage before measuring. */
export const NODE_FLAGS = [...new Set([...process.execArgv, '--expose-gc'])];
const READY_TIMEOUT_MS = 15_000;

const live = new Set<Proc>();

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all. */
  error?: string;
}

/** How a stop went: `forced` when SIGTERM was not enough and SIGKILL ended the process. */
export interface Stopped {
  name: string;
  exit: Exit;
  forced: boolean;
}

export class Proc {
  readonly name: string;
  protected readonly proc: ChildProcess;
  readonly exited: Promise<Exit>;
  #exit: Exit | null = null;

  constructor(name: string, file: string, args: string[], options: SpawnOptions) {
    this.name = name;
    this.proc = spawn(file, args, options);
    live.add(this);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => resolve(this.#ended({ code, signal })));
      // A spawn failure (ENOENT) emits 'error' and no 'exit'.
      this.proc.once('error', (err) => {
        if (this.proc.pid === undefined)
          resolve(this.#ended({ code: null, signal: null, error: err.message }));
      });
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** How the process ended, or null while it runs. */
  get exit(): Exit | null {
    return this.#exit;
  }

  get stdout(): Readable | null {
    return this.proc.stdout;
  }

  get stderr(): Readable | null {
    return this.proc.stderr;
  }

  /** `signal` (SIGTERM), then SIGKILL if the process has not exited within `graceMs`. */
  async stop(graceMs = 1000, signal: NodeJS.Signals = 'SIGTERM'): Promise<Stopped> {
    if (this.#exit !== null) return { name: this.name, exit: this.#exit, forced: false };
    let forced = false;
    this.proc.kill(signal);
    const timer = setTimeout(() => {
      forced = true;
      this.proc.kill('SIGKILL');
    }, graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { name: this.name, exit, forced };
  }

  kill(): void {
    if (this.#exit === null) this.proc.kill('SIGKILL');
  }

  protected onExit(): void {}

  #ended(exit: Exit): Exit {
    this.#exit ??= exit;
    live.delete(this);
    this.onExit();
    return this.#exit;
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** A Node script of ours, run with NODE_FLAGS and an IPC channel. */
export class Child extends Proc {
  readonly #pending = new Map<number, Pending>();
  readonly #events: ChildMessage[] = [];
  readonly #eventWaiters = new Set<(msg: ChildMessage) => void>();
  #nextId = 1;
  readonly ready: Promise<ChildMessage>;

  /**
   * `script` is the compiled file, e.g. `new URL('./sink.js', import.meta.url)`; `nodeFlags` go after
   * the shared NODE_FLAGS, for a workload that needs its processes run differently.
   */
  constructor(name: string, script: URL, args: string[], nodeFlags: readonly string[] = []) {
    super(name, process.execPath, [...NODE_FLAGS, ...nodeFlags, fileURLToPath(script), ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.ready = this.#waitReady();
    this.ready.catch(() => {});
    this.proc.on('message', (msg: ChildMessage) => this.#onMessage(msg));
  }

  request<T = Args>(cmd: string, args: Args, timeoutMs: number): Promise<T> {
    if (this.exit !== null) return Promise.reject(new Error(`${this.name} ${describeExit(this.exit)}`));
    const id = this.#nextId++;
    const answer = new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    this.proc.send({ type: 'req', id, cmd, args });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: ${cmd} got no answer within ${Math.round(timeoutMs)} ms`));
      }, timeoutMs);
    });
    return Promise.race([answer, timeout]).finally(() => clearTimeout(timer));
  }

  /** Resolves with the first event named `name` the child sent, even one sent before this call. */
  event(name: string, timeoutMs: number): Promise<ChildMessage> {
    const seen = this.#events.find((m) => m.name === name);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#eventWaiters.delete(waiter);
        reject(new Error(`${this.name}: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (msg: ChildMessage) => {
        if (msg.name !== name) return;
        clearTimeout(timer);
        this.#eventWaiters.delete(waiter);
        resolve(msg);
      };
      this.#eventWaiters.add(waiter);
    });
  }

  /** Events seen so far, e.g. an unexpected `tunnel-closed`. */
  get events(): readonly ChildMessage[] {
    return this.#events;
  }

  protected override onExit(): void {
    const why = `${this.name} ${describeExit(this.exit!)}`;
    for (const pending of this.#pending.values()) pending.reject(new Error(why));
    this.#pending.clear();
  }

  #waitReady(): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: not ready within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      this.proc.on('message', (msg: ChildMessage) => {
        if (msg.type !== 'ready') return;
        clearTimeout(timer);
        resolve(msg);
      });
      void this.exited.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited before ready (${describeExit(exit)})`));
      });
    });
  }

  #onMessage(msg: ChildMessage): void {
    if (msg.type === 'event') {
      this.#events.push(msg);
      for (const waiter of [...this.#eventWaiters]) waiter(msg);
      return;
    }
    if (msg.type !== 'res') return;
    const pending = this.#pending.get(msg.id as number);
    if (pending === undefined) return;
    this.#pending.delete(msg.id as number);
    if (msg.ok === true) pending.resolve(msg.result);
    else pending.reject(new Error(`${this.name}: ${String(msg.error)}`));
  }
}

export function describeExit(exit: Exit): string {
  if (exit.error !== undefined) return `failed to start: ${exit.error}`;
  return `exited (code ${exit.code}, signal ${exit.signal})`;
}

/** Calls `onLine` with each complete line the stream carries. */
export function readLines(stream: Readable, onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (text: string) => {
    const parts = (partial + text).split('\n');
    partial = parts.pop()!;
    for (const line of parts) onLine(line);
  });
  stream.on('end', () => {
    if (partial !== '') onLine(partial);
  });
}

/** Kills every process still running. Safe to call from an 'exit' handler (synchronous). */
export function killAll(): void {
  for (const proc of live) proc.kill();
}

/** Reads this process's open-file limit; children inherit it. */
export async function openFileLimit(): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile('/proc/self/limits', 'utf8').catch(() => '');
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = Number(line?.split(/\s{2,}/)[1]);
  return Number.isFinite(soft) && soft > 0 ? soft : 1024;
}

/**
 * Kills every child on exit, on SIGINT/SIGTERM and on an uncaught exception, and gives up after
 * `watchdogMs`: a bench never leaves processes behind or runs forever. `name` prefixes the messages.
 */
export function installCleanup(name: string, watchdogMs: number): void {
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      killAll();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    console.error(`${name}: ${err.stack}`);
    killAll();
    process.exit(1);
  });
  const watchdog = setTimeout(() => {
    console.error(`${name}: watchdog fired, the run took too long`);
    killAll();
    process.exit(1);
  }, watchdogMs);
  watchdog.unref();
}
