// Two in-memory Duplexes wired to each other, for fast session tests. Delivery is asynchronous (like a
// socket), backpressure is real (a writer's callback waits until the other side reads), and
// `blackhole()` makes both directions silently stop delivering, as a dead network path does.
import { Duplex } from 'node:stream';

class PairSide extends Duplex {
  peer!: PairSide;
  blackholed = false;
  #waiting: (() => void) | null = null;

  constructor() {
    super({ allowHalfOpen: false });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.blackholed) return; // never acknowledged: the writer stalls, as on a dead TCP path
    process.nextTick(() => {
      if (this.peer.destroyed) return cb();
      if (this.peer.push(chunk)) cb();
      else this.peer.#waiting = () => cb();
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    process.nextTick(() => {
      if (!this.blackholed && !this.peer.destroyed) this.peer.push(null);
      cb();
    });
  }

  override _read(): void {
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting?.();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.blackholed && !this.peer.destroyed) process.nextTick(() => this.peer.destroy());
    cb(err);
  }
}

export interface DuplexPair {
  a: Duplex;
  b: Duplex;
  /** Both directions stop delivering without closing. */
  blackhole(): void;
}

export function duplexPair(): DuplexPair {
  const a = new PairSide();
  const b = new PairSide();
  a.peer = b;
  b.peer = a;
  return {
    a,
    b,
    blackhole() {
      a.blackholed = true;
      b.blackholed = true;
    },
  };
}
