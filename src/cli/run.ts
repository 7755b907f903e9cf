// What every command runs with, shared by the service commands (main.ts) and the admin commands
// (admin.ts) without either importing the other for it.

/** Where a command's output goes: stdout and stderr, or a test's buffers. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** What a command runs with: where output goes, when to stop, and the environment. */
export interface Run {
  io: Io;
  signal: AbortSignal | undefined;
  env: NodeJS.ProcessEnv;
}
