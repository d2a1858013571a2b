// The event the crash tests publish and handle: one reading of a key, numbered per key (`seq`).
import { z } from 'zod';
import { defineEvent } from '../../src/index.js';

/** Topic of the publisher test (created on first publish, with the log's default partition count). */
export const publishTopic = 'crash.published';

export const ReadingRecorded = defineEvent('ReadingRecorded', {
  schema: z.object({ key: z.string(), seq: z.number().int().nonnegative() }),
  key: 'key',
  topic: publishTopic,
});

/** The same event on another topic: each test gets its own. */
export function readingOn(topic: string) {
  return defineEvent('ReadingRecorded', {
    schema: z.object({ key: z.string(), seq: z.number().int().nonnegative() }),
    key: 'key',
    topic,
  });
}
