/** Reading text lines from a stream (stdin), with a bound on the length of one line. */
import { usageError } from './errors.js';

/**
 * Yields the lines of `input` with their 1-based numbers, without line terminators (`\n` or `\r\n`). A final line
 * without a terminator is yielded too. Throws a usage error for a line longer than `maxLineChars`, so that one
 * runaway line cannot take all memory.
 */
export async function* readLines(
  input: AsyncIterable<string | Uint8Array>,
  maxLineChars: number,
): AsyncGenerator<{ lineNumber: number; text: string }> {
  const decoder = new TextDecoder('utf-8');
  let buffered = '';
  let lineNumber = 0;
  const tooLong = () =>
    usageError(
      `stdin line ${lineNumber + 1} is longer than ${maxLineChars} characters; publish large events from code`,
    );
  for await (const chunk of input) {
    buffered += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      lineNumber++;
      if (newline > maxLineChars) throw tooLong();
      yield { lineNumber, text: buffered.slice(0, newline).replace(/\r$/, '') };
      buffered = buffered.slice(newline + 1);
    }
    if (buffered.length > maxLineChars) throw tooLong();
  }
  buffered += decoder.decode();
  if (buffered.length > 0) yield { lineNumber: lineNumber + 1, text: buffered.replace(/\r$/, '') };
}
