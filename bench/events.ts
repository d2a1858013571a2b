// Event definitions shared by the bench cases and the consumer child processes.
import { z } from 'zod';
import { defineEvent } from 'tidings';

/** About 256 bytes on the wire with its envelope. */
export const Measured = defineEvent('ReadingRecorded', {
  schema: z.object({ sensorId: z.string(), payload: z.string() }),
  key: 'sensorId',
  topic: 'readings',
});

/** A latency probe: `sentAt` is {@link wallClockMs} taken just before `bus.publish` was called. */
export const Probed = defineEvent('ProbeSent', {
  schema: z.object({ sensorId: z.string(), seq: z.number(), sentAt: z.number(), payload: z.string() }),
  key: 'sensorId',
  topic: 'probes',
});

export const payload = 'x'.repeat(180);
export const probePayload = 'x'.repeat(140);
export const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);

/**
 * Milliseconds since the epoch with sub-millisecond resolution, comparable across processes on one machine (both
 * derive from the system clock); used on both sides of every latency measurement.
 */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}
