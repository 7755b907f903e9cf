// A flag parser's complaint in a user's words. node:util parseArgs answers a typo such as `--jsn` with
// "Unknown option '--jsn'", followed, for commands that take arguments, by advice about positional
// arguments that has nothing to do with the mistake. The CLI says "unknown flag --jsn" instead, and
// names the flag that was probably meant.

/** What to print for an error thrown by parseArgs over `flags` (the long names the command takes). */
export function flagProblem(err: unknown, flags: readonly string[]): string {
  const { code, message } = err as { code?: unknown; message: string };
  if (code !== 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return message;
  const flag = /'([^']+)'/.exec(message)?.[1] ?? '';
  const meant = closest(flag.replace(/^-+/, ''), flags);
  return `unknown flag ${flag}${meant === undefined ? '' : ` (did you mean --${meant}?)`}`;
}

/** The known flag nearest to `typed`, when it is near enough to be the one meant. */
function closest(typed: string, flags: readonly string[]): string | undefined {
  if (typed.length < 2) return undefined;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const flag of flags) {
    const d = flag.startsWith(typed) ? 0 : distance(typed, flag);
    if (d < bestDistance) [best, bestDistance] = [flag, d];
  }
  // Two edits, and fewer than half the letters: `jsn` → `json`, `tunel` → `tunnels`; not `x` → `ca`.
  return bestDistance <= Math.min(2, Math.floor(typed.length / 2)) ? best : undefined;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length]!;
}
