// Real transport pairs for the session suite: a listener of the given scheme on 127.0.0.1 port 0, a
// fault proxy in front of it, and a dialer through the proxy.
import type { Duplex } from 'node:stream';
import { dial, listen } from '../../src/transport/index.js';
import { makeTestCerts } from './certs.js';
import { FaultProxy } from './fault-proxy.js';
import type { MakeTransportPair, TransportPair } from './session-pair.js';
import { EVENT_MS, within } from './wait.js';

export type Scheme = 'tcp' | 'tls' | 'ws' | 'wss';

export function transportPair(scheme: Scheme): MakeTransportPair {
  return async (): Promise<TransportPair> => {
    const secure = scheme === 'tls' || scheme === 'wss';
    const certs = secure ? await makeTestCerts() : undefined;
    const path = scheme.startsWith('ws') ? '/tunnel' : '';
    let accepted!: (d: Duplex) => void;
    const serverSide = new Promise<Duplex>((resolve) => {
      accepted = resolve;
    });
    const listener = await listen(
      { url: `${scheme}://127.0.0.1:0${path}`, ...(certs ? { cert: certs.cert, key: certs.key } : {}) },
      (transport) => accepted(transport),
    );
    const proxy = await FaultProxy.start(listener.address());
    const client = await dial({
      url: `${scheme}://localhost:${proxy.port}${path}`,
      ...(certs ? { ca: certs.ca } : {}),
    });
    const server = await within(serverSide, EVENT_MS, `the ${scheme} listener to accept`);
    return {
      client,
      server,
      blackhole: () => proxy.blackhole(),
      async close() {
        client.destroy();
        server.destroy();
        await proxy.close();
        await listener.close();
      },
    };
  };
}
