#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';
import { applyV8Flags } from '../dist/src/cli/v8-flags.js';

// Before the service allocates anything worth collecting: see src/cli/v8-flags.ts.
applyV8Flags();
const code = await main(process.argv.slice(2));
process.exitCode = code;
// An orchestrator waits for the process to exit after SIGTERM. Should anything still hold the event loop
// after the service closed, say so and exit anyway. The timer is unref'd: it never delays a clean exit.
setTimeout(() => {
  process.stderr.write('sluice: handles still open 5s after shutdown; exiting\n');
  process.exit(code);
}, 5000).unref();
