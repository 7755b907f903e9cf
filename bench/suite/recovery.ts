// Recovery, Sluice only: how long the controller takes to see a dead tunnel, and how long traffic
// takes to flow again after the agent is killed and started anew.
import http from 'node:http';
import { sleep, withTimeout } from '../common/stats.js';
import { BENCH_HOST, HOST } from './common.js';
import { Relay } from './relay.js';
import { restartAgent, type Rig, startRig, stopRig } from './rig.js';
import { agentTakes, TUNNELS, waitTunnels } from './sluice.js';
import { type Context, type Outcome, probe } from './workloads.js';

const DETECT_TIMEOUT_MS = 60_000;
const RECOVERY_TIMEOUT_MS = 30_000;
const POLL_MS = 20;

/**
 * One round on fresh processes: the agent dials the controller through a relay, the controller pings
 * every `pingIntervalMs` and gives up after `pingTimeoutMs` of silence. The relay goes silent, and
 * the figure is the time until the controller has logged tunnel-down for every tunnel. The agent
 * gets the same ping options when its build has the flags; only the controller's side is timed.
 */
export async function deadTunnel(c: Context): Promise<Outcome> {
  const { pingIntervalMs, pingTimeoutMs } = c.sizes;
  const relay = new Relay();
  let rig: Rig | null = null;
  const notes: string[] = [];
  const agentPing = agentTakes('--ping-interval') && agentTakes('--ping-timeout');
  if (!agentPing)
    notes.push('dead tunnel: this agent has no --ping-interval flag; it keeps its default pings');
  try {
    rig = await startRig('sluice', {
      fileLimit: c.fileLimit,
      // tunnel-down is an info line.
      logLevel: 'info',
      tunnel: { pingInterval: `${pingIntervalMs}ms`, pingTimeout: `${pingTimeoutMs}ms` },
      agentDial: (tunnelPort) => relay.start(tunnelPort),
      agentArgs: agentPing
        ? ['--ping-interval', `${pingIntervalMs}ms`, '--ping-timeout', `${pingTimeoutMs}ms`]
        : [],
    });
    await probe(rig);
    const controller = rig.controller!.proc;
    const isDown = (l: { event?: string }) => l.event === 'tunnel-down';
    const downBefore = controller.lines.filter((e) => isDown(e.line)).length;
    if (downBefore > 0) notes.push(`dead tunnel: ${downBefore} tunnel-down lines before the blackhole`);
    const t0 = performance.now();
    relay.blackhole();
    const first = await controller.waitLines('first tunnel-down', isDown, downBefore + 1, DETECT_TIMEOUT_MS);
    const last = await controller.waitLines(
      'last tunnel-down',
      isDown,
      downBefore + TUNNELS,
      DETECT_TIMEOUT_MS,
    );
    const ms = last - t0;
    notes.push(`dead tunnel: tunnel-down after ${Math.round(first - t0)} and ${Math.round(ms)} ms`);
    return { metrics: { deadTunnelDetectMs: ms, deadTunnelDetectIntervals: ms / pingIntervalMs }, notes };
  } finally {
    // Closed first: while the relay is silent, the agent does not learn that its tunnels are gone and
    // would wait on them when it drains.
    await relay.close();
    if (rig !== null) notes.push(...(await stopRig(rig)));
  }
}

/** GET /small through the path; true on a 200. */
function getSmall(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: HOST, port, path: '/small', agent: false, headers: { host: BENCH_HOST } });
    const timer = setTimeout(() => req.destroy(), timeoutMs);
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => {
        clearTimeout(timer);
        resolve(res.statusCode === 200);
      });
      res.on('error', () => resolve(false));
    });
    req.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/**
 * One round on the workload's rig: SIGKILL the agent, wait for it to be gone, spawn a new one and
 * time from the spawn until a GET through the tunnel answers 200. Polls every 20 ms.
 */
export async function agentRestart(rig: Rig): Promise<Outcome> {
  await probe(rig);
  const old = rig.agent!;
  old.kill();
  await withTimeout(old.exited, 10_000, 'the killed agent to exit');
  const spawned = performance.now();
  restartAgent(rig, rig.controller!.tunnelPort);
  let ok = false;
  while (!ok && performance.now() - spawned < RECOVERY_TIMEOUT_MS) {
    ok = await getSmall(rig.port, 1000);
    if (!ok) await sleep(POLL_MS);
  }
  if (!ok) throw new Error(`no 200 through the tunnel ${RECOVERY_TIMEOUT_MS} ms after the agent restart`);
  const ms = performance.now() - spawned;
  await waitTunnels(rig.controller!.adminPort, TUNNELS, RECOVERY_TIMEOUT_MS);
  const both = performance.now() - spawned;
  return {
    metrics: { agentRestartMs: ms },
    notes: [
      `agent restart: first 200 after ${Math.round(ms)} ms, ${TUNNELS} tunnels up after ${Math.round(both)} ms`,
    ],
  };
}
