// A fleet for end-to-end tests: one real redis-server and several real `sluice controller` processes
// sharing it, each with its own public, tunnel, admin and peer listeners, plus agents that may know
// several of them. Every controller seeds the same YAML (cluster `c1` with TOKEN, the given routes),
// as a platform's fleet would. Ports are fixed at the first start, so that a restarted controller comes
// back where its agents, its peers and the load balancer look for it.
import { writeFileSync } from 'node:fs';
import { freePort } from './listen.js';
import { join } from 'node:path';
import { RedisServer } from './redis.js';
import { SluiceProcess, TOKEN, tempDir } from './sluice-procs.js';
import { READY_MS } from './wait.js';

export const ADMIN_TOKEN = 'fleet-admin-token-0123456789abcdef';

export interface FleetRoute {
  host: string;
  target: string;
  path?: string;
  /** `passthrough`: a TLS passthrough route by SNI to a tcp:// target. */
  tls?: 'passthrough';
}

export interface FleetOptions {
  /** How many controllers; named a, b, c, … */
  controllers: number;
  routes: FleetRoute[];
  /** Extra YAML for every controller, appended verbatim. */
  extraYaml?: string;
  /** The hosts cluster c1 may claim by route discovery (`clusters[].hosts`); default none. */
  hosts?: string[];
  /** Extra environment for every controller. */
  env?: NodeJS.ProcessEnv;
  /** Extra flags for every controller, e.g. ['--grace-period', '2s']. */
  args?: string[];
}

export class FleetController {
  readonly name: string;
  proc!: SluiceProcess;
  publicPort = 0;
  tunnelPort = 0;
  adminPort = 0;
  peerPort = 0;
  readonly #fleet: Fleet;
  readonly #dir: string;

  constructor(fleet: Fleet, name: string, dir: string) {
    this.#fleet = fleet;
    this.name = name;
    this.#dir = dir;
  }

  get tunnelUrl(): string {
    return `tcp://127.0.0.1:${this.tunnelPort}`;
  }

  get adminUrl(): string {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  get started(): boolean {
    return this.proc !== undefined;
  }

  get running(): boolean {
    const child = this.proc?.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** Starts (or restarts, on the same ports) and waits for its listeners. */
  async start(env: NodeJS.ProcessEnv = {}): Promise<void> {
    if (this.peerPort === 0) {
      // The advertised URL must name the peer port before the process starts, so that one is picked
      // here; the other listeners bind port 0 on the first start and keep what they got.
      this.peerPort = await freePort();
    }
    const options = this.#fleet.options;
    const routes = options.routes
      .map((r) => {
        const path = r.path === undefined ? '' : `\n    path: ${JSON.stringify(r.path)}`;
        const tls = r.tls === undefined ? '' : `\n    tls: ${r.tls}`;
        return `  - host: ${JSON.stringify(r.host)}${path}${tls}\n    cluster: c1\n    target: ${JSON.stringify(r.target)}`;
      })
      .join('\n');
    const yaml = [
      `listen: 127.0.0.1:${this.publicPort}`,
      `tunnelListen: tcp://127.0.0.1:${this.tunnelPort}`,
      `adminListen: 127.0.0.1:${this.adminPort}`,
      `dataDir: ${JSON.stringify(this.#dir)}`,
      `store: ${JSON.stringify(this.#fleet.redis.url)}`,
      `peerListen: tcp://127.0.0.1:${this.peerPort}`,
      `peerAdvertise: tcp://127.0.0.1:${this.peerPort}`,
      'clusters:',
      `  - name: c1\n    tokens: ${JSON.stringify([TOKEN])}` +
        (options.hosts === undefined ? '' : `\n    hosts: ${JSON.stringify(options.hosts)}`),
      routes === '' ? 'routes: []' : `routes:\n${routes}`,
      options.extraYaml ?? '',
    ].join('\n');
    const file = join(this.#dir, 'sluice.yaml');
    writeFileSync(file, yaml);
    this.proc = new SluiceProcess(['controller', '--config', file, ...(options.args ?? [])], {
      SLUICE_ADMIN_TOKEN: ADMIN_TOKEN,
      ...options.env,
      ...env,
    });
    const url = async (listener: string): Promise<number> => {
      const line = await this.proc.waitLine(
        `controller ${this.name}'s ${listener} listener`,
        (l) => l.event === 'listening' && l.listener === listener,
        READY_MS,
      );
      return Number(new URL(String(line.url)).port);
    };
    this.publicPort = await url('public');
    this.tunnelPort = await url('tunnel');
    this.adminPort = await url('admin');
  }

  /** One admin API call with the fleet's admin token; resolves with the status and the JSON body. */
  async admin<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(READY_MS),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: kept as text
    }
    return { status: res.status, body: parsed as T };
  }

  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    return this.proc.stop(signal);
  }

  /** kill -9: no drain, no goodbye to its agents or peers. */
  async kill(): Promise<void> {
    this.proc.child.kill('SIGKILL');
    await this.proc.exited;
  }
}

export class Fleet {
  readonly options: FleetOptions;
  readonly controllers: FleetController[] = [];
  readonly agents: SluiceProcess[] = [];
  redis!: RedisServer;

  private constructor(options: FleetOptions) {
    this.options = options;
  }

  static async start(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    try {
      fleet.redis = await RedisServer.start();
      for (let i = 0; i < options.controllers; i++) fleet.add(String.fromCharCode(97 + i));
      // One at a time: the first one to start generates what the fleet shares (the peer secret).
      for (const controller of fleet.controllers) await controller.start();
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  /** One more controller on the same Redis, not started yet; stop() stops it with the rest. */
  add(name: string): FleetController {
    const controller = new FleetController(this, name, tempDir());
    this.controllers.push(controller);
    return controller;
  }

  /** The controller named `name` (a, b, c, …). */
  at(name: string): FleetController {
    const found = this.controllers.find((c) => c.name === name);
    if (found === undefined) throw new Error(`no controller ${name}`);
    return found;
  }

  /**
   * An agent of cluster c1 dialing the given controllers (in that order); waits until `tunnels` of its
   * tunnels are up across them, unless `wait` is false.
   */
  async startAgent(
    on: readonly FleetController[],
    options: {
      tunnels?: number;
      name?: string;
      token?: string;
      args?: string[];
      wait?: boolean;
      /** --allow patterns; default `127.0.0.1:*`. */
      allow?: string[];
      /** Tunnel URLs dialed in place of the controllers' own (a FaultProxy's, to break one). */
      urls?: string[];
      env?: NodeJS.ProcessEnv;
    } = {},
  ): Promise<SluiceProcess> {
    const tunnels = options.tunnels ?? on.length;
    const name = options.name ?? 'fleet-agent';
    const args = ['agent', '--tunnels', String(tunnels), '--name', name];
    for (const a of options.allow ?? ['127.0.0.1:*']) args.push('--allow', a);
    for (const url of options.urls ?? on.map((c) => c.tunnelUrl)) args.push('--controller', url);
    args.push(...(options.args ?? []));
    const agent = new SluiceProcess(args, { SLUICE_TOKEN: options.token ?? TOKEN, ...options.env });
    this.agents.push(agent);
    if (options.wait !== false) {
      await agent.waitCount('its tunnels up', (l) => l.event === 'tunnel-up', tunnels, READY_MS);
    }
    return agent;
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.agents.map((a) => a.stop()));
    await Promise.allSettled(this.controllers.map((c) => (c.started ? c.stop() : undefined)));
    await this.redis?.stop();
  }
}
