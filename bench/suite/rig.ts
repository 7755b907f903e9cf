// One set of processes for one workload on one path: the origin, the load generator and the path's
// hops. Every run gets a fresh set, so that one run's heap does not colour the next one's RSS, and
// every process is checked to exit when the run stops it.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Child, describeExit, type Proc, type Stopped } from '../common/proc.js';
import type { ChildMessage } from '../common/ipc.js';
import { benchCert } from './cert.js';
import { isTls, type PathName } from './common.js';
import { startHaproxy } from './haproxy.js';
import { startNginx } from './nginx.js';
import { freePort } from './ports.js';
import { listeningPorts } from './procfs.js';
import { startRedis } from './redis.js';
import { sshdDescendants, startSsh } from './ssh.js';
import {
  type Controller,
  type ControllerOptions,
  type SluiceProc,
  startAgent,
  startController,
  TUNNELS,
  waitServes,
  waitTunnels,
} from './sluice.js';

const TUNNEL_TIMEOUT_MS = 15_000;
/** How long controller B may take to learn from Redis presence that A holds the cluster's tunnels. */
const PRESENCE_TIMEOUT_MS = 30_000;
/** Sluice drains in-flight streams on SIGTERM; by then the load generator has closed them all. */
const STOP_GRACE_MS = 10_000;

/** A proxy process whose memory the workloads measure. */
export interface Hop {
  /** `nginx`, `node-proxy`, `controller`, `peer controller` (sluice-peer's A) or `agent`. */
  role: string;
  pid: number;
}

export interface Rig {
  path: PathName;
  origin: Child;
  client: Child;
  /** Where the load generator connects. */
  port: number;
  originPort: number;
  /** What the hops forward to: the origin's HTTP port, its raw TCP port, or a redis-server's. */
  target: Target;
  targetPort: number;
  /** The load generator speaks TLS to `port` (nginx-tls, sluice-tls). */
  tls: boolean;
  /** The path's proxy processes: none for direct. */
  hops: Hop[];
  /** Every process of the rig, stopped in this order: load generator first, origin last. */
  procs: Proc[];
  dir: string;
  /** The controller the agent dials: on sluice-peer, A, not the one the load generator talks to. */
  controller?: Controller;
  agent?: SluiceProc;
  /** Extra agent flags, kept for a restarted agent too. */
  agentArgs: string[];
}

/** `http`: the origin's HTTP server; `tcp`: its raw TCP target; `redis`: a redis-server of the rig's. */
export type Target = 'http' | 'tcp' | 'redis';

export interface RigOptions {
  fileLimit: number;
  /** What the path leads to; `http` unless given. */
  target?: Target;
  /** Sluice only: controller log level (default warn) and YAML tunnel section. */
  logLevel?: 'warn' | 'info';
  tunnel?: Record<string, string>;
  /** Sluice only: the agent dials this port instead of the controller's tunnel port (a relay). */
  agentDial?: (tunnelPort: number) => Promise<number>;
  agentArgs?: string[];
}

function port(msg: ChildMessage): number {
  const v = msg.port;
  if (typeof v !== 'number' || v <= 0)
    throw new Error(`ready message without a port: ${JSON.stringify(msg)}`);
  return v;
}

function child(name: string, script: string, args: string[] = []): Child {
  return new Child(name, new URL(`./${script}`, import.meta.url), args);
}

export async function startRig(path: PathName, o: RigOptions): Promise<Rig> {
  const dir = await mkdtemp(join(tmpdir(), `sluice-bench-${path}-`));
  const origin = child('origin', 'origin.js');
  const client = child('load generator', 'client.js');
  const rig: Rig = {
    path,
    origin,
    client,
    port: 0,
    originPort: 0,
    target: o.target ?? 'http',
    targetPort: 0,
    tls: isTls(path),
    hops: [],
    procs: [client, origin],
    dir,
    agentArgs: o.agentArgs ?? [],
  };
  try {
    const ready = await origin.ready;
    rig.originPort = port(ready);
    rig.targetPort = await targetPort(rig, ready);
    await client.ready;
    await startHops(rig, o);
    return rig;
  } catch (err) {
    await stopRig(rig);
    throw err;
  }
}

/** The target's port; a redis-server is started for it, and stopped just before the origin. */
async function targetPort(rig: Rig, ready: ChildMessage): Promise<number> {
  if (rig.target === 'http') return rig.originPort;
  if (rig.target === 'tcp') return port({ ...ready, port: ready.tcpPort });
  const redis = await startRedis(rig.dir);
  rig.procs.splice(rig.procs.length - 1, 0, redis.proc);
  return Number(new URL(redis.url).port);
}

async function startHops(rig: Rig, o: RigOptions): Promise<void> {
  switch (rig.path) {
    case 'direct':
      rig.port = rig.targetPort;
      return;
    case 'nginx':
    case 'nginx-tls': {
      const cert = rig.tls ? await benchCert() : null;
      const nginx = await startNginx(rig.dir, rig.originPort, o.fileLimit, cert);
      rig.procs.splice(1, 0, nginx.proc);
      rig.port = nginx.port;
      rig.hops.push({ role: 'nginx', pid: nginx.proc.pid! });
      return;
    }
    case 'node-proxy': {
      const proxy = child('node-proxy', 'node-proxy.js', ['--origin-port', String(rig.originPort)]);
      rig.procs.splice(1, 0, proxy);
      rig.port = port(await proxy.ready);
      rig.hops.push({ role: 'node-proxy', pid: proxy.pid! });
      return;
    }
    case 'haproxy': {
      const haproxy = await startHaproxy(rig.dir, rig.targetPort, o.fileLimit);
      rig.procs.splice(1, 0, haproxy.proc);
      rig.port = haproxy.port;
      rig.hops.push({ role: 'haproxy', pid: haproxy.proc.pid! });
      return;
    }
    case 'ssh':
      return startSshPath(rig);
    case 'sluice':
    case 'sluice-tls': {
      const controller = await rigController(rig, rig.dir, o, await sluiceExtra(rig));
      rig.port =
        rig.target !== 'http' ? controller.tcpPort : rig.tls ? controller.tlsPort : controller.publicPort;
      await rigAgent(rig, controller, o);
      rig.hops.push(
        { role: 'controller', pid: controller.proc.pid! },
        { role: 'agent', pid: rig.agent!.pid! },
      );
      return;
    }
    case 'sluice-peer':
      return startSluicePeer(rig, o);
  }
}

/**
 * sshd, then `ssh -N -R`: the hops are sshd's per-connection processes (the one that holds the
 * forward's port first, since its memory is the "proxy" row) and the ssh client. The listening sshd
 * only accepts, so it is stopped but not counted.
 */
async function startSshPath(rig: Rig): Promise<void> {
  const { ssh, started } = await startSsh(rig.dir, rig.targetPort);
  for (const p of started) rig.procs.splice(1, 0, p);
  rig.port = ssh.port;
  const children = await sshdDescendants(ssh.sshd.pid!);
  const holders: number[] = [];
  for (const pid of children) if ((await listeningPorts(pid)).includes(ssh.port)) holders.push(pid);
  const session = holders[0];
  if (session === undefined) throw new Error(`no sshd process listens on the forward's port ${ssh.port}`);
  rig.hops.push({ role: 'sshd session', pid: session });
  children
    .filter((pid) => pid !== session)
    .forEach((pid, i) => rig.hops.push({ role: i === 0 ? 'sshd monitor' : `sshd ${i + 1}`, pid }));
  rig.hops.push({ role: 'ssh', pid: ssh.client.pid! });
}

/** What the sluice and sluice-tls paths add to the YAML: the TLS listener, or a TCP route. */
async function sluiceExtra(rig: Rig): Promise<Pick<ControllerOptions, 'tls' | 'tcpTargetPort'>> {
  if (rig.target !== 'http') return { tcpTargetPort: rig.targetPort };
  return rig.tls ? { tls: await benchCert() } : {};
}

/** A controller with the path's YAML in `dir`, stopped with the rig (after whatever starts later). */
async function rigController(
  rig: Rig,
  dir: string,
  o: RigOptions,
  extra: Pick<ControllerOptions, 'name' | 'fleet' | 'tls' | 'tcpTargetPort'> = {},
): Promise<Controller> {
  const controller = await startController(dir, rig.originPort, {
    logLevel: o.logLevel ?? 'warn',
    ...(o.tunnel === undefined ? {} : { tunnel: o.tunnel }),
    ...extra,
  });
  rig.procs.splice(1, 0, controller.proc);
  return controller;
}

/** The agent, dialing `controller` (or the relay in front of it), once its tunnels are up. */
async function rigAgent(rig: Rig, controller: Controller, o: RigOptions): Promise<void> {
  rig.controller = controller;
  const dial = o.agentDial === undefined ? controller.tunnelPort : await o.agentDial(controller.tunnelPort);
  const agent = startAgent(dial, 'warn', rig.agentArgs);
  rig.procs.splice(1, 0, agent);
  rig.agent = agent;
  await Promise.race([
    waitTunnels(controller.adminPort, TUNNELS, TUNNEL_TIMEOUT_MS),
    agent.exited.then((exit) => {
      throw new Error(`agent ${describeExit(exit)}: ${agent.errorText.trim()}`);
    }),
  ]);
}

/**
 * Client → controller B → peer session → controller A → agent → origin: two fleet members on one
 * redis-server, with the same YAML; the agent dials A only, and the load generator talks to B.
 */
async function startSluicePeer(rig: Rig, o: RigOptions): Promise<void> {
  const redis = await startRedis(rig.dir);
  rig.procs.splice(1, 0, redis.proc);
  const member = async (name: 'a' | 'b') => {
    const dir = join(rig.dir, name);
    await mkdir(dir);
    const fleet = { store: redis.url, peerPort: await freePort() };
    return rigController(rig, dir, o, { name: `controller ${name.toUpperCase()}`, fleet });
  };
  // One after the other: the first one generates the fleet's peer secret into Redis.
  const a = await member('a');
  const b = await member('b');
  await rigAgent(rig, a, o);
  await waitServes(b.proc.name, b.publicPort, PRESENCE_TIMEOUT_MS);
  rig.port = b.publicPort;
  rig.hops.push(
    { role: 'controller', pid: b.proc.pid! },
    { role: 'peer controller', pid: a.proc.pid! },
    { role: 'agent', pid: rig.agent!.pid! },
  );
}

/** Replaces the rig's agent (the old one must have exited): the agent-restart workload. */
export function restartAgent(rig: Rig, dialPort: number): SluiceProc {
  const agent = startAgent(dialPort, 'warn', rig.agentArgs);
  rig.procs = rig.procs.map((p) => (p === rig.agent ? agent : p));
  rig.hops = rig.hops.map((h) => (h.role === 'agent' ? { role: 'agent', pid: agent.pid! } : h));
  rig.agent = agent;
  return agent;
}

/** Expected: every process ends with code 0 on SIGTERM within the grace period. */
function exitNote(s: Stopped): string | null {
  if (s.forced) return `${s.name} did not exit within ${STOP_GRACE_MS / 1000} s of SIGTERM: killed`;
  if (s.exit.code === 0) return null;
  return `${s.name} ${describeExit(s.exit)} when stopped`;
}

/** Stops every process in order and says which did not exit cleanly; removes the temp dir. */
export async function stopRig(rig: Rig): Promise<string[]> {
  const notes: string[] = [];
  for (const proc of rig.procs) {
    // A process that died earlier already has its exit noted by the workload that saw it fail.
    const earlier = proc.exit !== null;
    const stopped = await proc.stop(STOP_GRACE_MS);
    const note = earlier ? null : exitNote(stopped);
    if (note !== null) notes.push(note);
  }
  notes.push(...(await nginxErrors(rig.dir)));
  await rm(rig.dir, { recursive: true, force: true });
  return notes;
}

/** nginx's own complaints, at error level or worse. */
async function nginxErrors(dir: string): Promise<string[]> {
  const log = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '');
  const bad = log.split('\n').filter((l) => /\[(error|crit|alert|emerg)\]/.test(l));
  if (bad.length === 0) return [];
  return [`nginx error.log has ${bad.length} error lines, first: ${bad[0]!.slice(0, 300)}`];
}
