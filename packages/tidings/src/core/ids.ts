import { randomFillSync } from 'node:crypto';

/** Produces event ids. Injectable so tests and simulations can be deterministic. */
export type IdGenerator = () => string;

let lastMs = 0;
let sequence = 0;

// Random bytes are drawn from the OS in blocks, not per id: one syscall per 512 ids.
const poolBytes = 16 * 512;
const pool = new Uint8Array(poolBytes);
let poolOffset = poolBytes;
const hex = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a 12-bit counter that keeps ids created in the same
 * millisecond in increasing order within this process, then 62 random bits. Sortable by creation time.
 */
export const uuidv7: IdGenerator = () => {
  if (poolOffset === poolBytes) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const bytes = pool.subarray(poolOffset, poolOffset + 16);
  poolOffset += 16;
  let ms = Date.now();
  if (ms <= lastMs) {
    sequence = (sequence + 1) & 0xfff;
    if (sequence === 0) lastMs += 1; // counter wrapped: borrow the next millisecond to stay monotonic
    ms = lastMs;
  } else {
    lastMs = ms;
    sequence = 0;
  }
  bytes[0] = Math.floor(ms / 2 ** 40) & 0xff;
  bytes[1] = Math.floor(ms / 2 ** 32) & 0xff;
  bytes[2] = (ms >>> 24) & 0xff;
  bytes[3] = (ms >>> 16) & 0xff;
  bytes[4] = (ms >>> 8) & 0xff;
  bytes[5] = ms & 0xff;
  bytes[6] = 0x70 | ((sequence >>> 8) & 0x0f);
  bytes[7] = sequence & 0xff;
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  let out = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) out += '-';
    out += hex[bytes[i]!]!;
  }
  return out;
};
