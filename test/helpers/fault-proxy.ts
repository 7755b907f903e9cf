// A TCP proxy on 127.0.0.1 that sits in a tunnel's path and breaks it on demand: `blackhole()` stops
// forwarding in both directions without closing anything (a dead NAT entry or a pulled cable, which
// TCP does not report), `cut()` resets every connection.
import { once } from 'node:events';
import net from 'node:net';

export class FaultProxy {
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<[net.Socket, net.Socket]>();
  #blackholed = false;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => this.#onClient(client));
  }

  static async start(target: { host: string; port: number }): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    proxy.#server.listen(0, '127.0.0.1');
    await once(proxy.#server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Stops delivering bytes both ways; sockets stay open and silent. */
  blackhole(): void {
    this.#blackholed = true;
    for (const [a, b] of this.#pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  /** Resets every proxied connection (RST where the socket is still fully open). */
  cut(): void {
    for (const pair of this.#pairs) {
      // resetAndDestroy() on a half-closed socket can leave its handle open for good: plain destroy.
      for (const s of pair) {
        if (s.readyState === 'open') s.resetAndDestroy();
        else s.destroy();
      }
    }
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) for (const s of pair) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #onClient(client: net.Socket): void {
    if (this.#blackholed) return void client.pause();
    const upstream = net.connect({ ...this.#target, allowHalfOpen: true });
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.#pairs.add(pair);
    for (const s of pair) {
      s.setNoDelay(true);
      s.on('error', () => {});
      s.on('close', () => {
        this.#pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
