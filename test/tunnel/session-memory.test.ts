import { duplexPair } from '../helpers/duplex-pair.js';
import { runSessionSuite } from './session-suite.js';

runSessionSuite('an in-memory duplex pair', async () => {
  const pair = duplexPair();
  return {
    client: pair.a,
    server: pair.b,
    blackhole: pair.blackhole,
    async close() {
      pair.a.destroy();
      pair.b.destroy();
    },
  };
});
