// The `haproxy` path (issue #15): one haproxy hop in TCP mode, the usual TCP load balancer, from a
// config the bench writes into the rig's temp dir: foreground, one thread, no logs, no health checks.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Proc } from '../common/proc.js';
import { HOST } from './common.js';
import { binaryOnPath, listensWithin, startOnFreePort } from './ports.js';

const READY_TIMEOUT_MS = 10_000;

export function haproxyBinary(): string | null {
  return binaryOnPath('haproxy', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
}

/**
 * One thread, as nginx gets one worker and each Node hop one event loop. maxconn is the open-file
 * limit's share (two sockets per connection); the timeouts only keep a dead connection from staying.
 */
export function haproxyConf(port: number, targetPort: number, fileLimit: number): string {
  const maxconn = Math.max(256, Math.floor((fileLimit - 256) / 2));
  return `# Written by bench/suite/haproxy.ts for one bench run.
global
  nbthread 1
  maxconn ${maxconn}

defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h

frontend bench
  bind ${HOST}:${port}
  default_backend target

backend target
  server target ${HOST}:${targetPort}
`;
}

export interface Haproxy {
  proc: Proc;
  port: number;
}

/** Starts haproxy (`-db`: foreground) and resolves once it listens on its port. */
export function startHaproxy(dir: string, targetPort: number, fileLimit: number): Promise<Haproxy> {
  const binary = haproxyBinary();
  if (binary === null) throw new Error('haproxy not found (apt-get install haproxy)');
  const conf = join(dir, 'haproxy.cfg');
  return startOnFreePort<Haproxy>('haproxy', async (port) => {
    await writeFile(conf, haproxyConf(port, targetPort, fileLimit));
    const proc = new Proc('haproxy', binary, ['-db', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    proc.stderr?.setEncoding('utf8').on('data', (t: string) => (output = (output + t).slice(-4000)));
    if (await listensWithin(proc, port, READY_TIMEOUT_MS)) return { started: { proc, port } };
    await proc.stop(1000);
    return { output };
  });
}
