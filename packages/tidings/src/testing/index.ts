/**
 * `tidings/testing`: helpers for testing code built on Tidings.
 * @module
 */
export { createFakeClock, type FakeClock } from './fake-clock.js';
export { waitUntil } from './wait.js';
