// The redis-server the `sluice-peer` path's two controllers share (Debian's, on PATH): no persistence,
// on 127.0.0.1, in the rig's temp dir. It is ready when it listens on its port.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Proc } from '../common/proc.js';
import { HOST } from './common.js';
import { binaryOnPath, listensWithin, startOnFreePort } from './ports.js';

const READY_TIMEOUT_MS = 10_000;

export function redisBinary(): string | null {
  return binaryOnPath('redis-server', ['/usr/sbin', '/usr/local/bin']);
}

export interface Redis {
  proc: Proc;
  url: string;
}

export async function startRedis(dir: string): Promise<Redis> {
  const binary = redisBinary();
  if (binary === null) throw new Error('redis-server not found (apt-get install redis-server)');
  const cwd = join(dir, 'redis');
  await mkdir(cwd, { recursive: true });
  // redis-server cannot listen on port 0 and say which port it got.
  return startOnFreePort<Redis>('redis-server', async (port) => {
    const args = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no'];
    const proc = new Proc('redis-server', binary, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (t: string) => (output = (output + t).slice(-4000));
    proc.stdout?.setEncoding('utf8').on('data', keep);
    proc.stderr?.setEncoding('utf8').on('data', keep);
    if (await listensWithin(proc, port, READY_TIMEOUT_MS))
      return { started: { proc, url: `redis://${HOST}:${port}` } };
    await proc.stop(1000);
    return { output };
  });
}
