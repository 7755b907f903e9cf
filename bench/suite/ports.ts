// Finding the tools a path runs, and ports for the processes that cannot listen on port 0: nginx and
// redis-server, and Sluice's peer listener, whose URL must be advertised before it binds.
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Proc } from '../common/proc.js';
import { sleep } from '../common/stats.js';
import { HOST } from './common.js';
import { listeningPorts } from './procfs.js';

/** `name` on PATH, or in `extraDirs` (the sbin dirs a non-root PATH often lacks); null if absent. */
export function binaryOnPath(name: string, extraDirs: string[] = []): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...extraDirs]) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/**
 * The kernel picks a free port here, which is released and handed to a process. Another process could
 * take it in between; whoever starts that process retries with a new one.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: HOST, port: 0 }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether `proc` listens on `port` within `timeoutMs`, from /proc: false once it has exited. */
export async function listensWithin(proc: Proc, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && proc.exit === null) {
    if ((await listeningPorts(proc.pid!)).includes(port)) return true;
    await sleep(20);
  }
  return false;
}

/** What one attempt to start on a port gave: the started thing, or the process's last output. */
export type Attempt<T> = { started: T } | { output: string };

const BIND_ATTEMPTS = 3;

/**
 * Runs `attempt` on a fresh free port until it starts, retrying while the port was taken in between
 * (its output says "Address already in use"); throws with the output's last lines otherwise.
 */
export async function startOnFreePort<T>(
  what: string,
  attempt: (port: number) => Promise<Attempt<T>>,
): Promise<T> {
  for (let n = 1; ; n++) {
    const result = await attempt(await freePort());
    if ('started' in result) return result.started;
    if (n < BIND_ATTEMPTS && result.output.includes('Address already in use')) continue;
    throw new Error(`${what} did not start: ${result.output.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

/**
 * Runs a load generator (wrk, h2load, redis-benchmark) to its end and gives its stdout and stderr;
 * it is killed after `limitMs`, and any exit code but 0 is an error with its output.
 */
export async function runTool(
  name: string,
  binary: string,
  args: string[],
  limitMs: number,
): Promise<string> {
  const proc = new Proc(name, binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.setEncoding('utf8').on('data', (t: string) => (out += t));
  proc.stderr!.setEncoding('utf8').on('data', (t: string) => (out += t));
  // The report can still be in the pipe when 'exit' fires: wait for the end of stdout too.
  const ended = new Promise((resolve) => proc.stdout!.once('close', resolve));
  const limit = setTimeout(() => proc.kill(), limitMs);
  const [exit] = await Promise.all([proc.exited, ended]);
  clearTimeout(limit);
  if (exit.code !== 0)
    throw new Error(`${name} exited (code ${exit.code}, signal ${exit.signal}): ${out.trim().slice(-2000)}`);
  return out;
}
