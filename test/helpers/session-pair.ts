// Builds a connected client/server session pair over any transport pair, for the session suite.
import type { Duplex } from 'node:stream';
import type { SessionOptionsInput } from '../../src/tunnel/options.js';
import { type AcceptOptions, Session } from '../../src/tunnel/session.js';

export interface TransportPair {
  client: Duplex;
  server: Duplex;
  /** Makes the path between the two silently stop delivering, if the transport supports it. */
  blackhole?: () => void;
  close(): Promise<void>;
}

export type MakeTransportPair = () => Promise<TransportPair>;

/**
 * The same transports with the roles swapped: the side that listened runs the session client and the
 * dialer runs the server (yamux's TCP_Reverse). A controller-to-controller tunnel is built so.
 */
export function reverseRoles(make: MakeTransportPair): MakeTransportPair {
  return async () => {
    const t = await make();
    return { ...t, client: t.server, server: t.client };
  };
}

export interface SessionPair {
  client: Session;
  server: Session;
  transports: TransportPair;
  close(): Promise<void>;
}

export async function sessionPair(
  make: MakeTransportPair,
  options: SessionOptionsInput = {},
  accept: Partial<AcceptOptions> = {},
): Promise<SessionPair> {
  const transports = await make();
  const serverP = Session.accept(transports.server, {
    authenticate: () => ({ ok: true }),
    options,
    ...accept,
  });
  const client = await Session.connect(transports.client, {
    hello: { token: 'test-token', agent: 'test-agent', replica: 'r1' },
    options,
  });
  const server = await serverP;
  return {
    client,
    server,
    transports,
    async close() {
      client.destroy();
      server.destroy();
      await transports.close();
    },
  };
}
