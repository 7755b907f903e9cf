// A real PostgreSQL server (Debian's postgresql package, /usr/lib/postgresql/N/bin) owned by one test
// file: a fresh cluster made by initdb in a temporary directory, trust authentication, listening on a
// port of 127.0.0.1 with its Unix socket in that directory, so it never meets the machine's own
// cluster. It is ready when it logs that it accepts connections, never after a sleep.
//
// initdb and postgres refuse to run as root, so as root both run as the `postgres` user (spawned with
// its uid and gid, so that the server is our direct child and a kill reaches it, which it would not
// through runuser). No server outlives its test file: a root `after` hook kills every one still
// running, also when a `before` threw, and the test process kills them on its way out.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { freePort } from './listen.js';
import { READY_MS, scaled, within } from './wait.js';

const ROOT = '/usr/lib/postgresql';
const running = new Set<ChildProcess>();
let guarded = false;

function killAllNow(): void {
  for (const child of running) child.kill('SIGKILL');
}

const inTestFile =
  process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? '');
if (inTestFile) after(killAllNow);

/** The bin dir of the newest installed major version that has initdb and postgres, or null. */
export function postgresBinDir(): string | null {
  if (!existsSync(ROOT)) return null;
  const versions = readdirSync(ROOT)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = join(ROOT, v, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'postgres'))) return bin;
  }
  return null;
}

/** As root: the uid and gid of the `postgres` user, from /etc/passwd. Otherwise: run as we are. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  const fields = line?.split(':');
  if (fields === undefined || fields.length < 4) throw new Error('running as root, but no postgres user');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

function run(file: string, args: string[], user: { uid: number; gid: number } | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...user, timeout: scaled(READY_MS) }, (err, _stdout, stderr) => {
      if (err === null) resolve();
      else reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
    });
  });
}

export class PostgresServer {
  readonly port: number;
  /** The directory of the data and of the Unix socket. */
  readonly dir: string;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  log = '';

  private constructor(port: number, dir: string, child: ChildProcess) {
    this.port = port;
    this.dir = dir;
    this.#child = child;
    running.add(child);
    if (!guarded) {
      guarded = true;
      process.on('exit', killAllNow);
    }
    this.#exited = once(child, 'exit').then(() => {
      running.delete(child);
    });
    const collect = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString()).slice(-20_000);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
  }

  /** initdb, then the server; tries a few ports, should another process take the one picked first. */
  static async start(bin: string): Promise<PostgresServer> {
    const user = serverUser();
    const dir = mkdtempSync(join(tmpdir(), 'sluice-postgres-'));
    try {
      if (user !== undefined) chownSync(dir, user.uid, user.gid);
      const data = join(dir, 'data');
      await run(
        join(bin, 'initdb'),
        ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions'],
        user,
      );
      let last: Error | undefined;
      for (let attempt = 0; attempt < 5; attempt++) {
        const server = PostgresServer.#spawn(bin, dir, await freePort(), user);
        try {
          await server.#ready();
          return server;
        } catch (err) {
          server.#child.kill('SIGKILL');
          await server.#exited;
          last = new Error(`${(err as Error).message}\n${server.log}`);
          if (!server.log.includes('could not bind')) break;
        }
      }
      throw last ?? new Error('postgres did not start');
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  static #spawn(
    bin: string,
    dir: string,
    port: number,
    user: { uid: number; gid: number } | undefined,
  ): PostgresServer {
    // fsync off: a test's data need not survive a crash of the machine, and the disk is shared.
    const args = ['-D', join(dir, 'data'), '-h', '127.0.0.1', '-p', String(port), '-k', dir];
    for (const setting of ['fsync=off', 'max_connections=50', 'logging_collector=off'])
      args.push('-c', setting);
    const child = spawn(join(bin, 'postgres'), args, { ...user, stdio: ['ignore', 'pipe', 'pipe'] });
    return new PostgresServer(port, dir, child);
  }

  async #ready(): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (this.log.includes('database system is ready to accept connections')) resolve();
      };
      this.#child.stdout!.on('data', check);
      this.#child.stderr!.on('data', check);
      this.#child.once('error', reject);
      void this.#exited.then(() => reject(new Error(`postgres exited before it was ready:\n${this.log}`)));
    });
    await within(ready, READY_MS, `postgres ready on port ${this.port}`);
  }

  /**
   * SIGINT is PostgreSQL's fast shutdown: it ends the sessions still open (SIGTERM would wait for
   * them). SIGKILL if it has not exited in time. Then its directory goes.
   */
  async stop(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill('SIGINT');
      await within(this.#exited, READY_MS, 'postgres to stop').catch(() => {
        this.#child.kill('SIGKILL');
        return this.#exited;
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
