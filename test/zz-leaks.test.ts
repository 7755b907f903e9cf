// Runs last (`npm test` runs the files in name order): no sluice child of this test run outlived the
// test file that started it. test/helpers/sluice-procs.ts gives each child the pid of its test file
// (SLUICE_TEST_OWNER_PID) and of the runner (SLUICE_TEST_RUN_PID); a child of this run whose file has
// ended is a leak. It is named, with the ports it listens on, and killed, so that it cannot hold ports
// or CPU after the suite.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { waitFor } from './helpers/wait.js';

interface Child {
  pid: number;
  owner: number;
  cmdline: string;
}

function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The sluice children of this run whose test file is gone. */
function orphans(): Child[] {
  const found: Child[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let environ: string;
    try {
      environ = readFileSync(`/proc/${entry}/environ`, 'latin1');
    } catch {
      continue; // gone, or not ours
    }
    const vars = new Map(
      environ.split('\0').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    if (vars.get('SLUICE_TEST_RUN_PID') !== String(process.ppid)) continue;
    const owner = Number(vars.get('SLUICE_TEST_OWNER_PID'));
    const pid = Number(entry);
    if (alive(owner) || !alive(pid)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      continue;
    }
    found.push({ pid, owner, cmdline });
  }
  return found;
}

/** The TCP ports `pid` listens on, from its socket inodes and /proc/net/tcp{,6}. */
function listening(pid: number): number[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) inodes.add(m[1]!);
    }
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const row of text.split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      // st 0A is LISTEN; field 9 is the inode.
      if (f[3] === '0A' && inodes.has(f[9] ?? '')) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

test(
  'no sluice child of this run outlived its test file',
  { skip: process.platform !== 'linux' && 'reads /proc' },
  async (t) => {
    // A file that just ended has SIGKILLed its children on the way out: give the kernel a moment.
    const first = orphans();
    await waitFor('the children of ended test files to be gone', () => orphans().length === 0).catch(
      () => {},
    );
    const leaked = orphans().map((c) => ({ ...c, listening: listening(c.pid) }));
    for (const c of leaked) process.kill(c.pid, 'SIGKILL');
    t.diagnostic(`${first.length} children of ended files at first look, ${leaked.length} left`);
    assert.deepEqual(
      leaked,
      [],
      `sluice children outlived their test files (now killed):\n${leaked.map((c) => JSON.stringify(c)).join('\n')}`,
    );
  },
);
