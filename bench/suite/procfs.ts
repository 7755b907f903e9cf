// What /proc tells about a process we did not write: its resident memory, the CPU time it has used,
// and the TCP ports it listens on (how the bench finds a port-0 listener whose readiness line the log
// level hides).
import { execFileSync } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';

/** VmRSS of `pid` in bytes; null once the process is gone. */
export async function rssBytes(pid: number): Promise<number | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  const kb = status === null ? null : /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return kb === null || kb === undefined ? null : Number(kb[1]) * 1024;
}

let ticksPerSecond: number | null = null;

/** The clock ticks /proc/PID/stat counts in (USER_HZ, 100 on Linux almost everywhere). */
function clockTicks(): number {
  if (ticksPerSecond === null) {
    let n = Number.NaN;
    try {
      n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim());
    } catch {
      // no getconf: the Linux default
    }
    ticksPerSecond = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/** User plus system CPU time `pid` has used so far, in ms; null once the process is gone. */
export async function cpuMs(pid: number): Promise<number | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return null;
  // pid (comm) state ppid …: comm may hold spaces and brackets, so count from the last ')'.
  // utime and stime are fields 14 and 15, i.e. the 12th and 13th after the state's field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? (ticks * 1000) / clockTicks() : null;
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

/** The read and write system calls `pid` has made so far (/proc/PID/io); null once it is gone. */
export async function syscallCounts(pid: number): Promise<{ reads: number; writes: number } | null> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => '');
  const reads = /^syscr:\s+(\d+)$/m.exec(io);
  const writes = /^syscw:\s+(\d+)$/m.exec(io);
  return reads === null || writes === null ? null : { reads: Number(reads[1]), writes: Number(writes[1]) };
}
