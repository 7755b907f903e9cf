import type { Logger } from 'pino';

export interface DevOptions {
  /** Public listener, default 127.0.0.1:8080. */
  listen?: { host: string; port: number };
  /** Admin listener, default 127.0.0.1:8081. */
  adminListen?: { host: string; port: number };
}

export interface DevHandle {
  readonly publicUrl: string;
  readonly demoUrl: string;
  close(): Promise<void>;
}

export async function startDev(options: DevOptions, logger: Logger): Promise<DevHandle> {
  void options;
  void logger;
  throw new Error('not built yet');
}
