/**
 * One logger for imgflow and for Temporal's own logs: JSON lines by default (for journald and log
 * shippers), readable when stderr is a terminal or IMGFLOW_LOG_PRETTY=1.
 */
import { destination, pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, level = process.env.IMGFLOW_LOG_LEVEL ?? 'info'): Logger {
  const pretty =
    process.env.IMGFLOW_LOG_PRETTY === '1' || (process.stderr.isTTY && process.env.IMGFLOW_LOG_PRETTY !== '0');
  if (pretty) {
    return pino({
      name,
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, ignore: 'pid,hostname' } },
    });
  }
  return pino({ name, level }, destination(2));
}
