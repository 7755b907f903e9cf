// The `ssh` path: OpenSSH's remote forward, the tunnel people run without installing anything. A
// private sshd (Debian's, /usr/sbin/sshd) on 127.0.0.1 with a host key and an authorized key made in
// the rig's temp dir, and `ssh -N -R` from the same machine that exposes the origin on a port sshd
// allocates. Traffic: load generator → sshd's session process → encrypted channel → ssh → origin.
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Proc } from '../common/proc.js';
import { sleep } from '../common/stats.js';
import { HOST } from './common.js';
import { binaryOnPath, listensWithin, startOnFreePort } from './ports.js';

const READY_TIMEOUT_MS = 15_000;
const run = promisify(execFile);

export function sshdBinary(): string | null {
  return binaryOnPath('sshd', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
}

export function sshBinary(): string | null {
  return binaryOnPath('ssh', ['/usr/bin', '/usr/local/bin']);
}

/** sshd_config for one run: loopback only, keys only, files in `dir`, no PAM, no DNS lookups. */
export function sshdConf(dir: string, port: number): string {
  return `# Written by bench/suite/ssh.ts for one bench run.
ListenAddress ${HOST}:${port}
HostKey ${join(dir, 'host_key')}
PidFile ${join(dir, 'sshd.pid')}
AuthorizedKeysFile ${join(dir, 'authorized_keys')}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
AllowTcpForwarding remote
GatewayPorts no
# scp speaks SFTP since OpenSSH 9.0.
Subsystem sftp internal-sftp
MaxStartups 10:30:100
LogLevel ERROR
`;
}

export interface Ssh {
  sshd: Proc;
  client: Proc;
  /** The port sshd's session process listens on for the remote forward. */
  port: number;
}

async function keygen(file: string): Promise<void> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'sluice-bench', '-f', file], {
    timeout: 10_000,
  });
}

/** A private sshd that is up: its process, its port, and the client key its authorized_keys lists. */
export interface Sshd {
  proc: Proc;
  port: number;
  /** The private key of a client that may log in as root. */
  userKey: string;
}

/**
 * Starts a private sshd in `dir` (made if missing): a host key and a client key made there, the
 * client's public key as the only authorized key, on a free port of 127.0.0.1. Resolves once it
 * listens. Shared with test/e2e/tcp-servers.test.ts.
 */
export async function startSshd(dir: string): Promise<Sshd> {
  const sshd = sshdBinary();
  if (sshd === null) throw new Error('sshd not found (apt-get install openssh-server)');
  await mkdir(dir, { recursive: true });
  // sshd refuses to start without its privilege-separation dir.
  await mkdir('/run/sshd', { recursive: true });
  await keygen(join(dir, 'host_key'));
  await keygen(join(dir, 'user_key'));
  await writeFile(join(dir, 'authorized_keys'), await readFile(join(dir, 'user_key.pub')));
  const conf = join(dir, 'sshd_config');
  const server = await startOnFreePort<{ proc: Proc; port: number }>('sshd', async (port) => {
    await writeFile(conf, sshdConf(dir, port));
    // -D: no daemon; -e: log to stderr.
    const proc = new Proc('sshd', sshd, ['-D', '-e', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    proc.stderr?.setEncoding('utf8').on('data', (t: string) => (output = (output + t).slice(-4000)));
    if (await listensWithin(proc, port, READY_TIMEOUT_MS)) return { started: { proc, port } };
    await proc.stop(1000);
    return { output };
  });
  return { ...server, userKey: join(dir, 'user_key') };
}

/** Starts sshd, then `ssh -N -R`, and resolves once the forward's port listens. */
export async function startSsh(rigDir: string, originPort: number): Promise<{ ssh: Ssh; started: Proc[] }> {
  const ssh = sshBinary();
  if (ssh === null) throw new Error('ssh not found (apt-get install openssh-client)');
  const dir = join(rigDir, 'ssh');
  const server = await startSshd(dir);
  const started: Proc[] = [server.proc];
  try {
    // Remote port 0: sshd allocates one and ssh prints it. ExitOnForwardFailure: no silent half-tunnel.
    const args = [
      '-N',
      '-T',
      '-p',
      String(server.port),
      '-i',
      server.userKey,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      `UserKnownHostsFile=${join(dir, 'known_hosts')}`,
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'ServerAliveInterval=0',
      '-R',
      `${HOST}:0:${HOST}:${originPort}`,
      `root@${HOST}`,
    ];
    const client = new Proc('ssh', ssh, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    started.push(client);
    let output = '';
    client.stderr?.setEncoding('utf8').on('data', (t: string) => (output = (output + t).slice(-4000)));
    const deadline = performance.now() + READY_TIMEOUT_MS;
    let port = 0;
    while (performance.now() < deadline && client.exit === null && port === 0) {
      const m = /Allocated port (\d+) for remote forward/.exec(output);
      if (m !== null) port = Number(m[1]);
      else await sleep(20);
    }
    if (port === 0)
      throw new Error(`ssh -R did not start: ${output.trim().split('\n').slice(-3).join(' | ')}`);
    return { ssh: { sshd: server.proc, client, port }, started };
  } catch (err) {
    for (const p of started.reverse()) await p.stop(2000);
    throw err;
  }
}

/** The pids of sshd's per-connection processes (monitor and session), children of the listener. */
export async function sshdDescendants(pid: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [pid];
  for (let n = 0; n < 64 && queue.length > 0; n++) {
    const p = queue.shift()!;
    const text = await readFile(`/proc/${p}/task/${p}/children`, 'utf8').catch(() => '');
    for (const c of text
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')) {
      out.push(Number(c));
      queue.push(Number(c));
    }
  }
  return out;
}
