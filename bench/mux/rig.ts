// One set of processes for one workload: sink, agent relay, controller relay and load generator.
// Each workload gets a fresh rig so that one's heap does not colour the next one's RSS.
import type { Args } from '../common/ipc.js';
import { Child } from '../common/proc.js';

export type Impl = 'pipe' | 'sluice';

const TUNNEL_TIMEOUT_MS = 15_000;
const STATS_TIMEOUT_MS = 10_000;

export interface Rig {
  readonly impl: Impl;
  readonly sink: Child;
  readonly controller: Child;
  readonly agent: Child;
  readonly client: Child;
  /** The controller relay's public port: where the load generator connects. */
  readonly port: number;
}

function port(msg: Args, key: string): number {
  const v = msg[key];
  if (typeof v !== 'number' || v <= 0)
    throw new Error(`ready message without ${key}: ${JSON.stringify(msg)}`);
  return v;
}

/** Starts the relay pair in the order its impl needs; every child is pushed to `started` at once. */
async function startRelays(
  impl: Impl,
  sinkPort: number,
  started: Child[],
  relayFlags: readonly string[],
): Promise<{ controller: Child; agent: Child }> {
  const child = (name: string, script: string, args: string[]) => {
    const c = new Child(name, new URL(`./${script}`, import.meta.url), args, relayFlags);
    started.push(c);
    return c;
  };
  if (impl === 'pipe') {
    const agent = child('agent relay', 'relay-agent.js', ['--impl', 'pipe', '--sink-port', `${sinkPort}`]);
    const agentPort = port(await agent.ready, 'port');
    const controller = child('controller relay', 'relay-controller.js', [
      '--impl',
      'pipe',
      '--agent-port',
      `${agentPort}`,
    ]);
    await controller.ready;
    return { controller, agent };
  }
  const controller = child('controller relay', 'relay-controller.js', ['--impl', 'sluice']);
  const tunnelPort = port(await controller.ready, 'tunnelPort');
  const agent = child('agent relay', 'relay-agent.js', [
    '--impl',
    'sluice',
    '--sink-port',
    `${sinkPort}`,
    '--tunnel-port',
    `${tunnelPort}`,
  ]);
  // The agent is ready once Session.connect resolved; the controller once Session.accept did.
  await Promise.all([agent.ready, controller.event('tunnel', TUNNEL_TIMEOUT_MS)]);
  return { controller, agent };
}

/** `relayFlags`: extra node flags for the two relays only (see relayNodeFlags in workloads.ts). */
export async function startRig(impl: Impl, relayFlags: readonly string[] = []): Promise<Rig> {
  const started: Child[] = [];
  try {
    const sink = new Child('sink', new URL('./sink.js', import.meta.url), []);
    const client = new Child('client', new URL('./client.js', import.meta.url), []);
    started.push(sink, client);
    const sinkPort = port(await sink.ready, 'port');
    const { controller, agent } = await startRelays(impl, sinkPort, started, relayFlags);
    await client.ready;
    return { impl, sink, controller, agent, client, port: port(await controller.ready, 'publicPort') };
  } catch (err) {
    await Promise.all(started.map((c) => c.stop()));
    throw err;
  }
}

export async function stopRig(rig: Rig): Promise<void> {
  await Promise.all([rig.client, rig.controller, rig.agent, rig.sink].map((c) => c.stop()));
}

export function relayStats(rig: Rig): Promise<[Args, Args]> {
  return Promise.all([
    rig.controller.request('stats', {}, STATS_TIMEOUT_MS),
    rig.agent.request('stats', {}, STATS_TIMEOUT_MS),
  ]);
}

/** RSS of the controller and agent relays in bytes; with `gc`, after two full collections. */
export function relayRss(rig: Rig, gc: boolean): Promise<[number, number]> {
  return Promise.all([
    rig.controller.request<number>('rss', { gc }, STATS_TIMEOUT_MS),
    rig.agent.request<number>('rss', { gc }, STATS_TIMEOUT_MS),
  ]);
}
