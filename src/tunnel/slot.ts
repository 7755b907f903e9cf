// A tunnel's identity among its agent's tunnels (docs/protocol.md §4, "Tunnel identity"): which of the
// agent's `--tunnels N` positions it fills and how many times that position has been dialed, carried as
// two HELLO caps. The agent writes them, the controller reads them; both sides share this one rule.

/** One position among an agent's `--tunnels N` and how many times it has been dialed. */
export interface TunnelSlotId {
  readonly index: number;
  readonly generation: number;
}

const SLOT_CAP = 'slot=';
const GENERATION_CAP = 'gen=';
const CAP_NUMBER = /^(?:0|[1-9]\d{0,14})$/;

/** The HELLO caps that say which slot a tunnel fills and which dial of it this is. */
export function slotCaps(slot: TunnelSlotId): string[] {
  return [`${SLOT_CAP}${slot.index}`, `${GENERATION_CAP}${slot.generation}`];
}

/** The slot named by HELLO caps, or undefined unless both entries are there and well-formed. */
export function parseSlotCaps(caps: readonly string[]): TunnelSlotId | undefined {
  const value = (prefix: string): number | undefined => {
    const cap = caps.find((c) => c.startsWith(prefix));
    const text = cap?.slice(prefix.length);
    return text !== undefined && CAP_NUMBER.test(text) ? Number(text) : undefined;
  };
  const index = value(SLOT_CAP);
  const generation = value(GENERATION_CAP);
  return index === undefined || generation === undefined ? undefined : { index, generation };
}
