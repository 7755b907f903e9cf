// A Node script run to its end as a child process, its stdout and stderr kept together: for tests of
// the command-line tools (the bench harnesses) and of fixtures that check an exit code and what was
// printed.
import { spawn } from 'node:child_process';

export interface Ran {
  code: number | null;
  output: string;
}

/** `node [NODE_FLAGS] SCRIPT ARGS...`, killed after `timeoutMs`; resolves once it has exited. */
export async function runNode(
  script: string,
  args: string[],
  timeoutMs: number,
  nodeFlags: string[] = [],
): Promise<Ran> {
  const child = spawn(process.execPath, [...nodeFlags, script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: timeoutMs,
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  return { code, output };
}
