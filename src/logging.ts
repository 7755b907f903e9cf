// Readiness lines (DESIGN §5) are an interface: scripts and tests wait for them. They are logged at
// info, but must appear even when the log level is warn or error, so they go through a child logger
// that is never quieter than info. `silent` stays silent.
import type { Logger } from 'pino';

export function readinessLogger(logger: Logger): Logger {
  const quieter = logger.level !== 'silent' && !logger.isLevelEnabled('info');
  return quieter ? logger.child({}, { level: 'info' }) : logger;
}
