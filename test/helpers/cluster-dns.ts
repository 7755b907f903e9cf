// Loaded into an agent child with `--import` (NODE_OPTIONS): answers the in-cluster names listed in
// SLUICE_TEST_CLUSTER_DNS (a JSON object, name → IP address) the way a cluster's DNS would, and hands
// every other name to the real resolver. No cluster DNS runs on the machines that test Sluice, and the
// routes that discovery makes name Services (`web.shop.svc.cluster.local`); with this, an end-to-end
// test reaches a real origin on 127.0.0.1 through the agent's real delivery path, its policy and its
// checking lookup included.
import dns, { type LookupAddress } from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';

type Callback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

const answers = JSON.parse(process.env.SLUICE_TEST_CLUSTER_DNS ?? '{}') as Record<string, string>;
const real = dns.lookup.bind(dns) as (...args: unknown[]) => void;

function lookup(hostname: string, options: unknown, callback?: unknown): void {
  const address = answers[hostname.toLowerCase()];
  if (address === undefined) return real(hostname, options, callback);
  const cb = (typeof options === 'function' ? options : callback) as Callback;
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true;
  const family = address.includes(':') ? 6 : 4;
  process.nextTick(() => (all ? cb(null, [{ address, family }]) : cb(null, address, family)));
}

(dns as { lookup: unknown }).lookup = lookup;
// `import { lookup } from 'node:dns'` in the agent's modules sees the replacement too.
syncBuiltinESMExports();
