// A TCP proxy on 127.0.0.1 that sits in a tunnel's path and breaks it on demand, the ways networks do:
// - `blackhole()` stops forwarding both ways without closing anything (a pulled cable, a dead route:
//   TCP reports nothing, the senders' buffers fill);
// - `drop()` resets the dialer's side only and leaves the listener's side open and silent (a NAT or
//   firewall that forgot the connection: the agent learns at once, the controller does not);
// - `delay(ms)` holds every chunk for `ms` each way, in order (a long or congested path);
// - `cut()` resets both sides.
// Each applies to the connections open now; `blackhole()` and `delay()` also to later ones, until
// `heal()`. `links` lists the open connections in accept order, each with the same verbs for itself.
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { EVENT_MS, within } from './wait.js';

/** Bytes held for delivery in one direction before its source is paused. */
const DELAY_BUFFER = 1024 * 1024;

export class FaultProxy extends EventEmitter {
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  /** Open connections, in the order they were accepted. */
  readonly links: Link[] = [];
  /** Connections accepted since the start. */
  accepted = 0;
  #blackholed = false;
  #delayMs = 0;

  private constructor(target: { host: string; port: number }) {
    super();
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

  /** `tcp://127.0.0.1:port`, for an agent's --controller. */
  get url(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Resolves once `count` connections have been accepted since the start. */
  async whenAccepted(count: number, timeoutMs = EVENT_MS): Promise<void> {
    if (this.accepted >= count) return;
    let onLink = (): void => {};
    const enough = new Promise<void>((resolve) => {
      onLink = () => {
        if (this.accepted >= count) resolve();
      };
      this.on('link', onLink);
    });
    try {
      await within(enough, timeoutMs, `${count} proxied connections`);
    } finally {
      this.off('link', onLink);
    }
  }

  /** Stops delivering bytes both ways, now and for new connections; sockets stay open and silent. */
  blackhole(): void {
    this.#blackholed = true;
    for (const link of this.links) link.blackhole();
  }

  /** Resets the dialer's side of every open connection; the listener's side stays open and silent. */
  drop(): void {
    for (const link of [...this.links]) link.drop();
  }

  /** Delivers every chunk `ms` late, both ways, now and for new connections; 0 turns it off. */
  delay(ms: number): void {
    this.#delayMs = ms;
    for (const link of this.links) link.delay(ms);
  }

  /** Resets every proxied connection (RST where the socket is still fully open). */
  cut(): void {
    for (const link of [...this.links]) link.cut();
  }

  /** New connections are forwarded normally again; broken ones stay broken. */
  heal(): void {
    this.#blackholed = false;
    this.#delayMs = 0;
  }

  async close(): Promise<void> {
    for (const link of [...this.links]) link.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #onClient(client: net.Socket): void {
    const upstream = net.connect({ ...this.#target, allowHalfOpen: true });
    const link = new Link(client, upstream, () => {
      const i = this.links.indexOf(link);
      if (i !== -1) this.links.splice(i, 1);
    });
    this.links.push(link);
    this.accepted++;
    if (this.#blackholed) link.blackhole();
    else if (this.#delayMs > 0) link.delay(this.#delayMs);
    this.emit('link', link);
  }
}

/** One proxied connection: the dialer's socket and ours to the target, forwarding both ways. */
export class Link {
  readonly #up: Direction;
  readonly #down: Direction;
  #gone = false;

  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
    onGone: () => void,
  ) {
    this.#up = new Direction(client, upstream);
    this.#down = new Direction(upstream, client);
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', () => {});
    }
    // A drop leaves the listener's side open on purpose; anything else that closes one side closes both.
    const onClose = (): void => {
      if (this.#gone) return;
      this.#gone = true;
      onGone();
      client.destroy();
      upstream.destroy();
    };
    client.on('close', onClose);
    upstream.on('close', onClose);
  }

  blackhole(): void {
    this.#up.blackhole();
    this.#down.blackhole();
  }

  delay(ms: number): void {
    this.#up.delayMs = ms;
    this.#down.delayMs = ms;
  }

  drop(): void {
    this.#gone = true;
    this.blackhole();
    reset(this.client);
    // The listener's side is never told: it stays open until its owner gives up on it, or the proxy
    // closes.
  }

  cut(): void {
    reset(this.client);
    reset(this.upstream);
  }

  destroy(): void {
    this.client.destroy();
    this.upstream.destroy();
  }
}

/** One direction of a link: reads `from`, writes `to`, with backpressure and an optional delay. */
class Direction {
  delayMs = 0;
  #blackholed = false;
  #queue: { chunk: Buffer; due: number }[] = [];
  #queued = 0;
  #timer: NodeJS.Timeout | null = null;
  #onFlushed: (() => void) | null = null;

  constructor(
    readonly from: net.Socket,
    readonly to: net.Socket,
  ) {
    from.on('data', (chunk: Buffer) => this.#onData(chunk));
    from.on('end', () => this.#whenFlushed(() => to.end()));
    to.on('drain', () => {
      if (!this.#blackholed && this.#queued < DELAY_BUFFER) from.resume();
    });
  }

  blackhole(): void {
    this.#blackholed = true;
    this.#queue = [];
    this.#queued = 0;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    // Not read, so the kernel buffers fill and the sender stalls, as on a path that acknowledges nothing.
    this.from.pause();
  }

  #onData(chunk: Buffer): void {
    if (this.#blackholed) return;
    if (this.delayMs === 0 && this.#queue.length === 0) {
      if (!this.to.write(chunk)) this.from.pause();
      return;
    }
    this.#queue.push({ chunk, due: Date.now() + this.delayMs });
    this.#queued += chunk.length;
    if (this.#queued >= DELAY_BUFFER) this.from.pause();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== null || this.#queue.length === 0) return;
    this.#timer = setTimeout(() => this.#release(), Math.max(0, this.#queue[0]!.due - Date.now()));
  }

  #release(): void {
    this.#timer = null;
    const now = Date.now();
    let ok = true;
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now) {
      const { chunk } = this.#queue.shift()!;
      this.#queued -= chunk.length;
      ok = this.to.write(chunk);
    }
    if (ok && this.#queued < DELAY_BUFFER) this.from.resume();
    this.#schedule();
    if (this.#queue.length === 0) this.#onFlushed?.();
  }

  /** Runs `fn` once the held chunks are written (at once when none are). */
  #whenFlushed(fn: () => void): void {
    if (this.#queue.length === 0) fn();
    else this.#onFlushed = fn;
  }
}

function reset(socket: net.Socket): void {
  // resetAndDestroy() on a half-closed socket can leave its handle open for good: plain destroy.
  if (socket.readyState === 'open') socket.resetAndDestroy();
  else socket.destroy();
}
