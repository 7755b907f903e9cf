// Containers for what comes and goes thousands of times a second inside a container that lives for
// hours: the streams of a session by id, and the responses a listener has in flight. They do what a
// Map or a Set would do there, without V8's hash tables, because of how those behave under such churn.
//
// A Map or Set that has lived through a full GC keeps its hash table in the old generation, and V8
// allocates every table it rehashes into (every few dozen adds, as deleted entries fill the table)
// there too. The table it drops is garbage, but it still points at the entries it held, and a
// scavenge takes every pointer from the old generation into the young one as live. So each dropped
// table keeps the young entries it held, and all they reach, alive until the next full GC: a
// finished request's objects are promoted instead of freed. In the controller this promoted about
// 1.3 MB per scavenge at 50 requests in flight, and the promotion brought the next full GC sooner,
// which put the next tables in the old generation again
// (bench/results/issue17-2026-12-07-promotion.md).
//
// Here a slot is cleared when its entry leaves, and an array that is outgrown is cleared before it is
// dropped (both grow by hand and never shrink), so nothing dead is left pointing at a young object.

const EMPTY_CAPACITY = 16;

/**
 * A table from a non-negative 32-bit id to a value, for ids handed out in sequence (stream ids):
 * open addressing with linear probing, deletion by backward shift, never more than half full.
 */
export class IdTable<V> {
  #keys: number[];
  #values: (V | undefined)[];
  #shift: number;
  #size = 0;

  constructor() {
    this.#keys = new Array<number>(EMPTY_CAPACITY).fill(0);
    this.#values = new Array<V | undefined>(EMPTY_CAPACITY).fill(undefined);
    this.#shift = 32 - Math.log2(EMPTY_CAPACITY);
  }

  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    const at = this.#find(id);
    return at < 0 ? undefined : this.#values[at];
  }

  has(id: number): boolean {
    return this.#find(id) >= 0;
  }

  set(id: number, value: V): this {
    if (value === undefined) throw new TypeError('IdTable: a value cannot be undefined');
    const mask = this.#values.length - 1;
    let at = this.#home(id);
    while (this.#values[at] !== undefined) {
      if (this.#keys[at] === id) {
        this.#values[at] = value;
        return this;
      }
      at = (at + 1) & mask;
    }
    this.#keys[at] = id;
    this.#values[at] = value;
    if (++this.#size * 2 > this.#values.length) this.#grow();
    return this;
  }

  delete(id: number): boolean {
    let hole = this.#find(id);
    if (hole < 0) return false;
    this.#values[hole] = undefined;
    this.#size--;
    // Backward shift (Knuth, TAOCP 6.4, algorithm R): an entry further along the run moves into the
    // hole unless its home lies cyclically within (hole, at], where a lookup would not reach it.
    const mask = this.#values.length - 1;
    for (let at = (hole + 1) & mask; this.#values[at] !== undefined; at = (at + 1) & mask) {
      const home = this.#home(this.#keys[at]!);
      const stays = hole <= at ? hole < home && home <= at : hole < home || home <= at;
      if (stays) continue;
      this.#keys[hole] = this.#keys[at]!;
      this.#values[hole] = this.#values[at];
      this.#values[at] = undefined;
      hole = at;
    }
    return true;
  }

  /** The values, in no particular order, as a copy that may be walked while the table changes. */
  list(): V[] {
    const out: V[] = [];
    for (const value of this.#values) if (value !== undefined) out.push(value);
    return out;
  }

  clear(): void {
    this.#values.fill(undefined);
    this.#size = 0;
  }

  /** Fibonacci hashing: ids in sequence, of one parity or both, spread over the whole table. */
  #home(id: number): number {
    return Math.imul(id, 0x9e3779b1) >>> this.#shift;
  }

  #find(id: number): number {
    const mask = this.#values.length - 1;
    for (let at = this.#home(id); this.#values[at] !== undefined; at = (at + 1) & mask) {
      if (this.#keys[at] === id) return at;
    }
    return -1;
  }

  #grow(): void {
    const keys = this.#keys;
    const values = this.#values;
    const capacity = values.length * 2;
    this.#keys = new Array<number>(capacity).fill(0);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#shift = 32 - Math.log2(capacity);
    this.#size = 0;
    for (let i = 0; i < values.length; i++) {
      const value = values[i];
      if (value !== undefined) this.set(keys[i]!, value);
    }
    values.fill(undefined);
  }
}

type Slotted = Record<symbol, number | undefined>;

/**
 * A set of objects, each of which knows its own place in it (a symbol-keyed property), so that add
 * and delete touch one array slot and no hash table. The property's key is the set's role: every
 * LiveSet of one role uses the same key (so its objects keep one shape), and an object may be in one
 * LiveSet of each role at a time.
 */
export class LiveSet<T extends object> {
  // Grown by hand, never shrunk, so that no storage V8 drops on a resize is left holding objects.
  #items: (T | undefined)[] = new Array<T | undefined>(EMPTY_CAPACITY).fill(undefined);
  #size = 0;
  readonly #slot: symbol;

  /** `role` names what the set is for, e.g. `session.unacked`. */
  constructor(role: string) {
    this.#slot = Symbol.for(`sluice.liveSet.${role}`);
  }

  get size(): number {
    return this.#size;
  }

  add(item: T): this {
    const slot = (item as Slotted)[this.#slot];
    if (slot !== undefined) {
      if (this.#items[slot] === item) return this;
      throw new TypeError(
        `LiveSet: the object is in another LiveSet of role ${this.#slot.description} already`,
      );
    }
    if (this.#size === this.#items.length) this.#grow();
    (item as Slotted)[this.#slot] = this.#size;
    this.#items[this.#size++] = item;
    return this;
  }

  has(item: T): boolean {
    const slot = (item as Slotted)[this.#slot];
    return slot !== undefined && this.#items[slot] === item;
  }

  delete(item: T): boolean {
    const slot = (item as Slotted)[this.#slot];
    if (slot === undefined || this.#items[slot] !== item) return false;
    // The last object takes the freed place, and the place it leaves is cleared.
    const last = this.#items[--this.#size]!;
    this.#items[this.#size] = undefined;
    if (last !== item) {
      this.#items[slot] = last;
      (last as Slotted)[this.#slot] = slot;
    }
    (item as Slotted)[this.#slot] = undefined;
    return true;
  }

  /** The objects, in no particular order, as a copy that may be walked while the set changes. */
  list(): T[] {
    return this.#items.slice(0, this.#size) as T[];
  }

  clear(): void {
    for (let i = 0; i < this.#size; i++) {
      (this.#items[i] as Slotted)[this.#slot] = undefined;
      this.#items[i] = undefined;
    }
    this.#size = 0;
  }

  #grow(): void {
    const items = this.#items;
    this.#items = items.concat(new Array<T | undefined>(items.length).fill(undefined));
    items.fill(undefined);
  }
}
