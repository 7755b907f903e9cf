// TCP routes with real servers and their own clients (issue #15), through a controller and an agent
// process: PostgreSQL with psql and pgbench, OpenSSH with ssh and scp, and haproxy reading the PROXY
// protocol v2 header the agent writes. Each part has its own stack and server, and is skipped with
// the reason when its binaries are not installed (.ci/run installs them).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { killAll, type Proc } from '../../bench/common/proc.js';
import { type Sshd, sshBinary, sshdBinary, startSshd } from '../../bench/suite/ssh.js';
import { Haproxy } from '../helpers/haproxy.js';
import { PostgresServer, postgresBinDir } from '../helpers/postgres.js';
import { Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs a client to its end with `input` on its stdin; killed after `timeoutMs` (scaled), which then
 * fails the test with what it printed. Its exit code is the caller's to judge.
 */
function runClient(
  file: string,
  args: string[],
  options: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<Ran> {
  const started = performance.now();
  const child = spawn(file, args, { env: { ...process.env, ...options.env }, stdio: 'pipe' });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  // A client that exits before reading all of its input makes the pipe fail; its exit code says why.
  child.stdin.on('error', () => {});
  child.stdin.end(options.input ?? '');
  const limit = scaled(options.timeoutMs ?? EVENT_MS);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      const text = Buffer.concat(err).toString().slice(-2000);
      reject(new Error(`${file} ${args.join(' ')} did not finish within ${limit}ms: ${text}`));
    }, limit);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const ms = performance.now() - started;
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms });
    });
  });
}

/** Like runClient, and the client must exit 0. */
async function runOk(
  file: string,
  args: string[],
  options: Parameters<typeof runClient>[2] = {},
): Promise<Ran> {
  const ran = await runClient(file, args, options);
  assert.equal(ran.code, 0, `${file} ${args.join(' ')} exited ${ran.code}: ${ran.stderr.slice(-2000)}`);
  return ran;
}

interface TcpTarget {
  port: number;
  proxyProtocol?: 'v2';
}

/**
 * A controller with one TCP route on a free port of 127.0.0.1 per target (cluster c1), and an agent
 * of c1 allowed to reach exactly those targets. Resolves with the stack and each route's bound port,
 * in the order of `targets`.
 */
async function tcpStack(targets: TcpTarget[]): Promise<{ stack: Stack; ports: number[] }> {
  const entries = targets.map(
    (t) =>
      `  - listen: 127.0.0.1:0\n    cluster: c1\n    target: tcp://127.0.0.1:${t.port}` +
      (t.proxyProtocol === undefined ? '' : `\n    proxyProtocol: ${t.proxyProtocol}`),
  );
  const stack = await Stack.start({
    routes: [],
    extraYaml: `tcpRoutes:\n${entries.join('\n')}`,
    allow: targets.map((t) => `127.0.0.1:${t.port}`),
  });
  // The routes bind in config order, each logged as it is ready, before the public listener is.
  const isTcp = (l: Record<string, unknown>): boolean => l.event === 'listening' && l.listener === 'tcp';
  await stack.controller.waitCount('TCP route listeners', isTcp, targets.length);
  const ports = stack.controller.lines.filter(isTcp).map((l) => Number(new URL(String(l.url)).port));
  return { stack, ports };
}

// --- PostgreSQL -------------------------------------------------------------------------------------

const PG_BIN = postgresBinDir();
const PSQL = '/usr/bin/psql';
const PGBENCH = PG_BIN === null ? '/usr/bin/pgbench' : join(PG_BIN, 'pgbench');
const pgSkip =
  PG_BIN === null || !existsSync(PSQL) || !existsSync(PGBENCH)
    ? 'PostgreSQL (initdb, postgres, psql, pgbench) is not installed (apt-get install postgresql; .ci/run installs it)'
    : false;

/** No PG* variable of the environment may point a client elsewhere, or ask for a password. */
const PG_ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.keys(process.env)
    .filter((k) => k.startsWith('PG'))
    .map((k) => [k, undefined]),
);

const ROWS = 100_000;

/** The rows to copy in, in COPY's text format: an id and a random hex text, one row a line. */
function copyRows(): string {
  const lines: string[] = [];
  for (let id = 1; id <= ROWS; id++) lines.push(`${id}\t${randomBytes(12 + (id % 20)).toString('hex')}`);
  return lines.join('\n') + '\n';
}

/** What `md5(string_agg(id || ':' || body, ',' order by id))` gives for those rows. */
function expectedChecksum(rows: string): string {
  const joined = rows
    .trimEnd()
    .split('\n')
    .map((line) => line.replace('\t', ':'))
    .join(',');
  return createHash('md5').update(joined).digest('hex');
}

const CHECKSUM_SQL =
  "select count(*) || ' ' || md5(string_agg(id::text || ':' || body, ',' order by id)) from copied";

describe('PostgreSQL through a TCP route', { skip: pgSkip }, () => {
  let pg: PostgresServer | undefined;
  let stack: Stack | undefined;
  let route = 0;

  /** psql as postgres to the database `postgres` on `port`, no psqlrc, stopping at the first error. */
  function psql(port: number, args: string[], input?: string): Promise<Ran> {
    const conn = [
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-U',
      'postgres',
    ];
    return runOk(PSQL, [...conn, '-d', 'postgres', ...args], { input, timeoutMs: 120_000, env: PG_ENV });
  }

  before(async () => {
    pg = await PostgresServer.start(PG_BIN!);
    ({
      stack,
      ports: [route = 0],
    } = await tcpStack([{ port: pg.port }]));
  });

  after(async () => {
    await stack?.stop();
    await pg?.stop();
  });

  test('psql copies 100,000 rows in and reads them back whole', async () => {
    await psql(route, ['-c', 'create table copied (id integer primary key, body text not null)']);
    const rows = copyRows();
    await psql(route, ['-c', 'copy copied (id, body) from stdin'], rows);

    const want = `${ROWS} ${expectedChecksum(rows)}`;
    const viaRoute = await psql(route, ['-At', '-c', CHECKSUM_SQL]);
    const direct = await psql(pg!.port, ['-At', '-c', CHECKSUM_SQL]);
    assert.equal(direct.stdout.trim(), want, 'the server has the rows as sent');
    assert.equal(viaRoute.stdout.trim(), want, 'the checksum read through the route');

    // And every byte back through the route, not only a digest the server computed.
    const back = await psql(route, ['-c', 'copy (select id, body from copied order by id) to stdout']);
    assert.equal(back.stdout.length, rows.length);
    assert.ok(back.stdout === rows, 'the rows read back through the route differ from those sent');
  });

  test('pgbench: 8 clients for 10 s with no failed transaction', async (t) => {
    const conn = ['-h', '127.0.0.1', '-p', String(route), '-U', 'postgres'];
    await runOk(PGBENCH, ['-i', '-q', ...conn, 'postgres'], { timeoutMs: 120_000, env: PG_ENV });
    const isDone = (l: Record<string, unknown>): boolean =>
      l.msg === 'tcp connection' && l.outcome === 'done';
    const before = stack!.controller.lines.filter(isDone).length;
    const bench = await runOk(PGBENCH, ['-c', '8', '-j', '2', '-T', '10', '-n', ...conn, 'postgres'], {
      timeoutMs: 120_000,
      env: PG_ENV,
    });
    const processed = /number of transactions actually processed: (\d+)/.exec(bench.stdout);
    const failed = /number of failed transactions: (\d+)/.exec(bench.stdout);
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(bench.stdout);
    assert.ok(processed !== null && failed !== null && tps !== null, `pgbench said:\n${bench.stdout}`);
    assert.equal(Number(failed[1]), 0, `pgbench said:\n${bench.stdout}`);
    assert.ok(Number(processed[1]) > 0, `pgbench said:\n${bench.stdout}`);
    t.diagnostic(`pgbench through the route: ${processed[1]} transactions, ${tps[1]} tps`);
    // Every client's connection was one TCP stream, each logged when it ended.
    await stack!.controller.waitCount('the pgbench connections logged', isDone, before + 8);
  });

  test('psql killed in the middle of a COPY: the server aborts it, and the next client finds no row', async () => {
    await psql(route, ['-c', 'create table partial (id integer primary key, body text not null)']);
    const conn = ['-X', '-q', '-h', '127.0.0.1', '-p', String(route), '-U', 'postgres', '-d', 'postgres'];
    const child = spawn(PSQL, [...conn, '-c', 'copy partial (id, body) from stdin'], {
      env: { ...process.env, ...PG_ENV },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    child.stdin.on('error', () => {});
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      // 16 chunks of the rows, never ended. Once psql has taken half of them from its stdin, it has
      // sent rows on through the route; then it dies without a word to the server.
      const rows = copyRows();
      const chunk = Math.ceil(rows.length / 16);
      let taken = 0;
      const half = new Promise<void>((resolve) => {
        for (let i = 0; i < 16; i++)
          child.stdin.write(rows.slice(i * chunk, (i + 1) * chunk), () => ++taken >= 8 && resolve());
      });
      await within(Promise.race([half, exited]), EVENT_MS, 'psql taking half of the rows');
      assert.ok(taken >= 8, `psql exited after taking ${taken} of 16 chunks`);
    } finally {
      child.kill('SIGKILL');
    }
    await within(exited, EVENT_MS, 'psql to exit');
    // The backend read rows, then the end of its connection: the FIN came through the route.
    await waitFor('postgres to log the COPY cut short', () =>
      /unexpected EOF on client connection[^]*COPY partial, line \d+/.test(pg!.log),
    );
    const count = await psql(route, ['-At', '-c', 'select count(*) from partial']);
    assert.equal(count.stdout.trim(), '0', 'the aborted COPY left no row');
  });
});

// --- SSH ----------------------------------------------------------------------------------------------

const SSH = sshBinary();
const SCP = '/usr/bin/scp';
const sshSkip =
  sshdBinary() === null || SSH === null || !existsSync(SCP)
    ? 'OpenSSH (sshd, ssh, scp) is not installed (apt-get install openssh-server openssh-client; .ci/run installs them)'
    : false;

const MiB = 1024 * 1024;

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('SSH through a TCP route', { skip: sshSkip }, () => {
  let dir = '';
  let sshd: Sshd | undefined;
  let stack: Stack | undefined;
  let route = 0;

  /** The options of every client: the test's key only, no user config, no known_hosts to keep. */
  function clientOptions(): string[] {
    return [
      '-F',
      '/dev/null',
      '-i',
      sshd!.userKey,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
    ];
  }

  function ssh(command: string): Promise<Ran> {
    return runClient(SSH!, ['-p', String(route), ...clientOptions(), 'root@127.0.0.1', command]);
  }

  before(async () => {
    // The bench's processes are killed on its own exit paths only: here, on the test process's.
    process.once('exit', killAll);
    dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-ssh-'));
    sshd = await startSshd(join(dir, 'sshd'));
    ({
      stack,
      ports: [route = 0],
    } = await tcpStack([{ port: sshd.port }]));
  });

  after(async () => {
    await stack?.stop();
    await stopSshd(sshd?.proc);
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  test('ssh runs a command: it prints hi, and again on a second connection', async () => {
    for (let n = 1; n <= 2; n++) {
      const ran = await ssh('echo hi');
      assert.equal(ran.code, 0, `ssh #${n} exited ${ran.code}: ${ran.stderr}`);
      assert.equal(ran.stdout, 'hi\n');
    }
    await stack!.controller.waitCount(
      'the ssh connections logged',
      (l) => l.msg === 'tcp connection' && l.outcome === 'done',
      2,
    );
  });

  test('scp carries 100 MiB up and back down with the same sha256', async (t) => {
    const source = join(dir, 'random.bin');
    writeFileSync(source, randomBytes(100 * MiB));
    const want = await sha256(source);
    const remote = join(dir, 'uploaded.bin');
    const back = join(dir, 'downloaded.bin');
    const scp = (from: string, to: string): Promise<Ran> =>
      runOk(SCP, ['-q', '-P', String(route), ...clientOptions(), from, to], { timeoutMs: 300_000 });

    const up = await scp(source, `root@127.0.0.1:${remote}`);
    assert.equal(await sha256(remote), want, 'the file sshd wrote');
    const down = await scp(`root@127.0.0.1:${remote}`, back);
    assert.equal(await sha256(back), want, 'the file scp fetched back');
    t.diagnostic(
      `scp of 100 MiB through the route: up ${(up.ms / 1000).toFixed(1)} s, down ${(down.ms / 1000).toFixed(1)} s`,
    );
  });

  test('a client killed in the middle of a transfer leaves the route working', async () => {
    const before = stack!.controller.lines.filter((l) => l.msg === 'tcp connection').length;

    const child = spawn(SSH!, ['-p', String(route), ...clientOptions(), 'root@127.0.0.1', 'cat /dev/zero'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let got = 0;
    const flowing = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= 4 * MiB) resolve();
      });
      child.once('exit', (code) => reject(new Error(`ssh exited (${code}) after ${got} bytes`)));
    });
    try {
      await within(flowing, EVENT_MS, '4 MiB from ssh cat /dev/zero');
    } finally {
      child.kill('SIGKILL');
    }
    // The killed client's connection ends and is logged: as a reset when its kernel still held bytes
    // ssh had not read (then it sends an RST), as done when it did not (a FIN). Either way sshd's side
    // is closed, and the next connection works as the first did.
    let seen = 0;
    const killed = await stack!.controller.waitLine(
      'the killed connection logged',
      (l) => l.msg === 'tcp connection' && ++seen > before,
    );
    assert.ok(killed.outcome === 'reset' || killed.outcome === 'done', JSON.stringify(killed));
    assert.ok(Number(killed.bytesOut) >= 4 * MiB, JSON.stringify(killed));
    const ran = await ssh('echo still here');
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, 'still here\n');
  });
});

/** Stops a private sshd; a stop that needed SIGKILL is fine here, its clients are gone. */
async function stopSshd(proc: Proc | undefined): Promise<void> {
  await proc?.stop(scaled(5000));
}

// --- PROXY protocol v2 ---------------------------------------------------------------------------------

const HAPROXY = '/usr/sbin/haproxy';
const CURL = '/usr/bin/curl';
const proxySkip =
  !existsSync(HAPROXY) || !existsSync(CURL)
    ? 'haproxy or curl is not installed (apt-get install haproxy curl; .ci/run installs them)'
    : false;

/**
 * A frontend that takes only connections that begin with a PROXY protocol header (accept-proxy), and
 * answers each HTTP request with the source and destination addresses that header gave it.
 */
function acceptProxyConfig(port: number, socket: string): string {
  return `global
  stats socket ${socket} mode 600 level admin

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s

frontend seen
  bind 127.0.0.1:${port} accept-proxy
  http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]"
`;
}

interface Fetched {
  body: string;
  /** curl's own end of the connection, `ip:port`. */
  local: string;
  /** How many connections curl opened for this URL: 0 when it reused the one before. */
  connects: number;
}

/** GETs each URL with one curl (one kept-alive connection), never through a proxy of the environment. */
async function curlEach(
  urls: string[],
): Promise<{ code: number | null; fetched: Fetched[]; stderr: string }> {
  const marker = '\n--curl:%{local_ip}:%{local_port}:%{num_connects}--\n';
  const args = ['--silent', '--show-error', '--noproxy', '*', '--max-time', '20', '-w', marker, ...urls];
  const ran = await runClient(CURL, args);
  const fetched: Fetched[] = [];
  const pattern = /([^]*?)\n--curl:([\d.]+:\d+):(\d+)--\n/g;
  for (let m = pattern.exec(ran.stdout); m !== null; m = pattern.exec(ran.stdout))
    fetched.push({ body: m[1]!, local: m[2]!, connects: Number(m[3]) });
  return { code: ran.code, fetched, stderr: ran.stderr };
}

describe('PROXY protocol v2 on a TCP route, read by haproxy', { skip: proxySkip }, () => {
  let haproxy: Haproxy | undefined;
  let stack: Stack | undefined;
  let withHeader = 0;
  let without = 0;

  before(async () => {
    haproxy = await Haproxy.startWith(acceptProxyConfig);
    ({
      stack,
      ports: [withHeader = 0, without = 0],
    } = await tcpStack([{ port: haproxy.port, proxyProtocol: 'v2' }, { port: haproxy.port }]));
  });

  after(async () => {
    await stack?.stop();
    await haproxy?.stop();
  });

  test("haproxy sees curl's own address and port, and the route's, on each connection", async () => {
    const ports = new Set<string>();
    for (let n = 1; n <= 3; n++) {
      const { code, fetched, stderr } = await curlEach([`http://127.0.0.1:${withHeader}/`]);
      assert.equal(code, 0, `curl #${n}: ${stderr}`);
      assert.equal(fetched.length, 1);
      const [{ body, local }] = fetched as [Fetched];
      assert.match(local, /^127\.0\.0\.1:\d+$/);
      assert.equal(body, `${local} 127.0.0.1:${withHeader}`, `curl #${n}`);
      ports.add(local);
    }
    assert.equal(ports.size, 3, 'each curl came from a port of its own');
  });

  test("requests kept alive on one connection all carry that connection's address", async () => {
    const urls = [1, 2, 3].map((n) => `http://127.0.0.1:${withHeader}/r${n}`);
    const { code, fetched, stderr } = await curlEach(urls);
    assert.equal(code, 0, stderr);
    assert.deepEqual(
      fetched.map((f) => f.connects),
      [1, 0, 0],
      'curl reused its first connection',
    );
    for (const f of fetched) assert.equal(f.body, `${fetched[0]!.local} 127.0.0.1:${withHeader}`);
  });

  test('without proxyProtocol, haproxy closes the connection: the header is what lets it through', async () => {
    const { code, fetched, stderr } = await curlEach([`http://127.0.0.1:${without}/`]);
    // 52: the server closed without a byte of answer; 56: the connection was reset.
    assert.ok(code === 52 || code === 56, `curl exited ${code}: ${stderr}`);
    assert.equal(fetched[0]?.body ?? '', '');
    // And the route with the header still answers, so the refusal was the header's absence.
    const again = await curlEach([`http://127.0.0.1:${withHeader}/`]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.fetched[0]?.body, `${again.fetched[0]?.local} 127.0.0.1:${withHeader}`);
  });
});
