// Reading a controller's admin API as the dashboard does: /api/traffic (with the admin token) and
// one sample of /metrics.
import assert from 'node:assert/strict';
import type { TrafficSnapshot } from '../../src/controller/traffic.js';
import { EVENT_MS, scaled } from './wait.js';

export async function trafficSnapshot(adminUrl: string, token: string): Promise<TrafficSnapshot> {
  const res = await fetch(`${adminUrl}/api/traffic`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  return (await res.json()) as TrafficSnapshot;
}

/** Re-asks /api/traffic until `check` holds; bounded in count and time. */
export async function trafficUntil(
  adminUrl: string,
  token: string,
  what: string,
  check: (s: TrafficSnapshot) => boolean,
): Promise<TrafficSnapshot> {
  const deadline = Date.now() + scaled(EVENT_MS);
  let last: TrafficSnapshot | undefined;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    last = await trafficSnapshot(adminUrl, token);
    if (check(last)) return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: never; last ${JSON.stringify(last?.tcpRoutes)}`);
}

/** The value of the sample `name{labels}` in /metrics, 0 when it is absent. */
export async function metricValue(adminUrl: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}
