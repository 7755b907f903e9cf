// A TCP relay between the agent and the controller's tunnel listener that can go silent on demand:
// `blackhole()` stops forwarding both ways and closes nothing, like a dead NAT entry or a pulled
// cable, which TCP does not report. Only pings can tell the controller the tunnel is dead.
import net from 'node:net';
import { HOST } from './common.js';

export class Relay {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #target = 0;
  #blackholed = false;

  constructor() {
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => this.#onClient(client));
  }

  /** Listens on 127.0.0.1, port 0, forwarding to `targetPort`; resolves with its own port. */
  start(targetPort: number): Promise<number> {
    this.#target = targetPort;
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ host: HOST, port: 0 }, () => resolve(this.port));
    });
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  blackhole(): void {
    this.#blackholed = true;
    for (const s of this.#sockets) {
      s.unpipe();
      s.pause();
    }
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #onClient(client: net.Socket): void {
    client.on('error', () => {});
    // New connections during a blackhole are accepted and never answered, as the lost route would.
    if (this.#blackholed) {
      client.pause();
      this.#sockets.add(client);
      return;
    }
    const upstream = net.connect({ host: HOST, port: this.#target, allowHalfOpen: true, noDelay: true });
    client.setNoDelay(true);
    for (const [s, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.#sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.#sockets.delete(s);
        if (!this.#blackholed) other.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
