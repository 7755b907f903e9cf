// The orchestrator's side of the child processes: spawn with the shared node flags, wait for the
// ready message, send requests over IPC with a timeout, and kill whatever is left on any exit.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Args, ChildMessage } from './common.js';

/** Every child runs with the same flags; --expose-gc lets `rss` collect garbage before measuring. */
export const NODE_FLAGS = [...new Set([...process.execArgv, '--expose-gc'])];
const READY_TIMEOUT_MS = 15_000;

const live = new Set<Child>();

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export class Child {
  readonly name: string;
  readonly #proc: ChildProcess;
  readonly #pending = new Map<number, Pending>();
  readonly #events: ChildMessage[] = [];
  readonly #eventWaiters = new Set<(msg: ChildMessage) => void>();
  #nextId = 1;
  #exit: string | null = null;
  readonly exited: Promise<void>;
  readonly ready: Promise<ChildMessage>;

  constructor(name: string, script: string, args: string[]) {
    this.name = name;
    const file = fileURLToPath(new URL(`./${script}`, import.meta.url));
    this.#proc = spawn(process.execPath, [...NODE_FLAGS, file, ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    live.add(this);
    this.exited = new Promise((resolve) => this.#proc.once('exit', () => resolve()));
    this.ready = this.#waitReady();
    this.ready.catch(() => {});
    this.#proc.on('message', (msg: ChildMessage) => this.#onMessage(msg));
    this.#proc.once('exit', (code, signal) => this.#onExit(code, signal));
  }

  get pid(): number | undefined {
    return this.#proc.pid;
  }

  request<T = Args>(cmd: string, args: Args, timeoutMs: number): Promise<T> {
    if (this.#exit !== null) return Promise.reject(new Error(`${this.name} ${this.#exit}`));
    const id = this.#nextId++;
    const answer = new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    this.#proc.send({ type: 'req', id, cmd, args });
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

  /** SIGTERM, then SIGKILL if the child has not exited within a second. */
  async stop(): Promise<void> {
    if (this.#exit !== null) return;
    this.#proc.kill('SIGTERM');
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 1000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.#exit === null) this.#proc.kill('SIGKILL');
  }

  #waitReady(): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: not ready within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      this.#proc.on('message', (msg: ChildMessage) => {
        if (msg.type !== 'ready') return;
        clearTimeout(timer);
        resolve(msg);
      });
      this.#proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited before ready (code ${code}, signal ${signal})`));
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

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.#exit = `exited (code ${code}, signal ${signal})`;
    live.delete(this);
    for (const pending of this.#pending.values()) pending.reject(new Error(`${this.name} ${this.#exit}`));
    this.#pending.clear();
  }
}

/** Kills every child still running. Safe to call from an 'exit' handler (synchronous). */
export function killAll(): void {
  for (const child of live) child.kill();
}

/** Reads this process's open-file limit; children inherit it. */
export async function openFileLimit(): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile('/proc/self/limits', 'utf8').catch(() => '');
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = Number(line?.split(/\s{2,}/)[1]);
  return Number.isFinite(soft) && soft > 0 ? soft : 1024;
}
