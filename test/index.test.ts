// The package entry point exposes the library surface docs/library.md shows.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as sluice from '../src/index.js';

test('the entry point exports the session, transports, options and errors', () => {
  for (const name of ['Session', 'dial', 'listen', 'resolveSessionOptions', 'SluiceError', 'ErrorCode']) {
    assert.ok(name in sluice, `missing export ${name}`);
  }
});
