// Route discovery in a fleet: two real controllers on one real Redis, an agent with --discover against
// the fake API server (helpers/fake-kube.ts), one tunnel on each controller. The discovered routes are
// the fleet's, in the shared store: a snapshot sent to one controller is served by both, and a
// controller whose last tunnel of the cluster went must not remove them while a peer still holds one.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { FakeKube, ingress } from '../helpers/fake-kube.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { Fleet, type FleetController } from '../helpers/fleet.js';
import { ask, type LogLine, type Reply, tempDir, writeFile } from '../helpers/sluice-procs.js';
import { scaled } from '../helpers/wait.js';

const DNS_HELPER = fileURLToPath(new URL('../helpers/cluster-dns.js', import.meta.url));
const GRACE_MS = 1000;
const HOST = 'app.shop.example.test';

let kube: FakeKube;
let fleet: Fleet;
let proxy: FaultProxy;
let origin: Server;
let port = 0;
let dir = '';

async function until(what: string, c: FleetController, check: (r: Reply) => boolean): Promise<void> {
  const deadline = Date.now() + scaled(30_000);
  let last: Reply | undefined;
  for (let i = 0; i < 100_000; i++) {
    last = await ask({ port: c.publicPort, host: HOST });
    if (check(last)) return;
    if (Date.now() > deadline) break;
    await sleep(25);
  }
  throw new Error(`timed out waiting for ${what} on ${c.name}; last answer ${last?.status}`);
}

const ok = (r: Reply): boolean => r.status === 200 && r.body.toString() === 'from the cluster';
const event =
  (name: string) =>
  (l: LogLine): boolean =>
    l.event === name && l.cluster === 'c1';

describe('route discovery in a fleet', () => {
  before(async () => {
    kube = await FakeKube.start();
    origin = createServer((_req, res) => res.end('from the cluster'));
    origin.listen(0, '127.0.0.1');
    await once(origin, 'listening');
    port = (origin.address() as AddressInfo).port;
    dir = tempDir();
    fleet = await Fleet.start({
      controllers: 2,
      routes: [],
      hosts: ['*.shop.example.test'],
      extraYaml: `discovery:\n  gracePeriod: ${GRACE_MS}ms`,
    });
    // The agent's tunnel to a goes through a proxy, so that the test can take it away for good.
    proxy = await FaultProxy.start({ host: '127.0.0.1', port: fleet.at('a').tunnelPort });
    const name = 'web.shop.svc.cluster.local';
    await fleet.startAgent([fleet.at('a'), fleet.at('b')], {
      urls: [proxy.url, fleet.at('b').tunnelUrl],
      allow: [`${name}:${port}`],
      args: ['--discover', '--kubeconfig', writeFile(dir, 'kubeconfig', kube.kubeConfigYaml())],
      env: {
        NODE_OPTIONS: `--import=${DNS_HELPER}`,
        SLUICE_TEST_CLUSTER_DNS: JSON.stringify({ [name]: '127.0.0.1' }),
      },
    });
  });

  after(async () => {
    await fleet?.stop();
    await proxy?.close();
    await kube?.close();
    origin?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  test('a snapshot is served by every controller of the fleet', async () => {
    kube.create('ingresses', ingress('shop', 'web', [{ host: HOST, paths: [{ service: 'web', port }] }]));
    await until('the route', fleet.at('a'), ok);
    await until('the route', fleet.at('b'), ok);
  });

  test("a controller whose last tunnel went keeps the routes while a peer holds one; the last one's grace removes them", async () => {
    const a = fleet.at('a');
    const b = fleet.at('b');
    // a's tunnel goes, and cannot come back: the agent's slot moves to b.
    await proxy.close();
    await a.proc.waitLine('the routes kept', event('discovery-grace-kept'), scaled(60_000));
    assert.equal(
      a.proc.lines.filter(event('discovery-expired')).length,
      0,
      'a did not remove what b still serves',
    );
    await until('still served through a', a, ok);
    await until('still served on b', b, ok);
    // The agent goes: b's grace period runs out, and the routes leave the fleet.
    await fleet.agents[0]!.stop();
    await b.proc.waitLine('the removal', event('discovery-expired'), scaled(60_000));
    await until('gone on b', b, (r) => r.status === 404);
    await until('gone on a', a, (r) => r.status === 404);
  });
});
