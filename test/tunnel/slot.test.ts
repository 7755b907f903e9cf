// The HELLO caps that carry a tunnel's slot and generation (docs/protocol.md §4, "Tunnel identity").
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseSlotCaps, slotCaps } from '../../src/tunnel/slot.js';

describe('slot caps', () => {
  test('round trip, and ignored unless both are there and well-formed', () => {
    assert.deepEqual(slotCaps({ index: 1, generation: 7 }), ['slot=1', 'gen=7']);
    assert.deepEqual(parseSlotCaps(['http1', 'slot=1', 'gen=7']), { index: 1, generation: 7 });
    for (const caps of [
      [],
      ['slot=1'],
      ['gen=2'],
      ['slot=-1', 'gen=2'],
      ['slot=01', 'gen=2'],
      ['slot=x', 'gen=1'],
    ])
      assert.equal(parseSlotCaps(caps), undefined, JSON.stringify(caps));
  });
});
