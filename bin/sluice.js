#!/usr/bin/env node
// V8's settings come first, before the service's modules load and the heap grows: set after them,
// they left the controller in its marking mode on bulk transfers in 3 rigs of 5; set before, in none
// of 18 (src/cli/v8-flags.ts). So main is imported only once they are set.
import { applyV8Flags } from '../dist/src/cli/v8-flags.js';

applyV8Flags();
const { main } = await import('../dist/src/cli/main.js');
const code = await main(process.argv.slice(2));
process.exitCode = code;
// An orchestrator waits for the process to exit after SIGTERM. Should anything still hold the event loop
// after the service closed, say so and exit anyway. The timer is unref'd: it never delays a clean exit.
setTimeout(() => {
  process.stderr.write('sluice: handles still open 5s after shutdown; exiting\n');
  process.exit(code);
}, 5000).unref();
