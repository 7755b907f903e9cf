// What /proc tells about a process we did not write: its resident memory, and the TCP ports it
// listens on (how the bench finds a port-0 listener whose readiness line the log level hides).
import { readdir, readFile, readlink } from 'node:fs/promises';

/** VmRSS of `pid` in bytes; null once the process is gone. */
export async function rssBytes(pid: number): Promise<number | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  const kb = status === null ? null : /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return kb === null || kb === undefined ? null : Number(kb[1]) * 1024;
}

const LISTEN = '0A';

/** The local ports of the IPv4 TCP sockets `pid` holds in the LISTEN state. */
export async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m !== null) inodes.add(m[1]!);
  }
  const table = await readFile(`/proc/${pid}/net/tcp`, 'utf8').catch(() => '');
  const ports: number[] = [];
  for (const row of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    const cols = row.trim().split(/\s+/);
    if (cols.length < 10 || cols[3] !== LISTEN || !inodes.has(cols[9]!)) continue;
    ports.push(Number.parseInt(cols[1]!.split(':')[1]!, 16));
  }
  return ports.sort((a, b) => a - b);
}
