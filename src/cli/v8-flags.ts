// The V8 settings a Sluice process gives itself at start (docs/operating.md "Garbage collection").
//
// One today: no concurrent marking. A proxy's bulk transfer allocates a fresh 64 KiB buffer for every
// socket read, and a process that has once been idle long enough for V8 to mark its heap in the
// background tends to stay in that mode under load: concurrent marking threads running beside every
// transfer, a mark-compact about every 25 MiB. On the bench's 256 MiB uploads that cost the controller
// 0.7 to 1.1 ms of CPU per MB on top of its 0.9 to 1.1, and about half the rigs fell into it. With
// concurrent marking off, V8 marks in small steps on the main thread instead, and no rig did
// (bench/results/issue17-2026-12-07-marking.md). On two shared cores, helper threads only compete
// with the process they help.
//
// A node command line that says anything itself about the same setting wins:
// `node --concurrent-marking bin/sluice.js controller` keeps V8's default. NODE_OPTIONS cannot carry
// these flags, so the command line is the only place to look.
import v8 from 'node:v8';

interface Setting {
  /** The flag to set. */
  readonly flag: string;
  /** V8 flags (without `--` or `--no-`) that, on the command line, mean the user chose for themselves. */
  readonly overriddenBy: readonly string[];
}

const SETTINGS: readonly Setting[] = [
  {
    flag: '--no-concurrent-marking',
    overriddenBy: ['concurrent-marking', 'single-threaded-gc', 'single-threaded'],
  },
];

/** The name of a V8 flag as written on a command line: `--no-concurrent_marking=x` is `concurrent-marking`. */
function flagName(arg: string): string | undefined {
  if (!arg.startsWith('--')) return undefined;
  const name = arg.slice(2).split('=', 1)[0]!.replaceAll('_', '-');
  return name.startsWith('no-') ? name.slice(3) : name;
}

/** The flags to set, given the node command line's own flags (`process.execArgv`). */
export function v8FlagsFor(execArgv: readonly string[]): string[] {
  const given = new Set(execArgv.map(flagName));
  return SETTINGS.filter((s) => !s.overriddenBy.some((name) => given.has(name))).map((s) => s.flag);
}

/** Sets the flags for this process, and returns them. Call before the service starts. */
export function applyV8Flags(execArgv: readonly string[] = process.execArgv): string[] {
  const flags = v8FlagsFor(execArgv);
  for (const flag of flags) v8.setFlagsFromString(flag);
  return flags;
}
