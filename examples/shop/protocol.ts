/** Messages between the demo's orchestrator (main.ts) and its service processes, over Node's IPC channel. */

/** Counters a consumer service reports. */
export interface ServiceStats {
  processed: number;
  duplicates: number;
  parked: number;
  deadLettered: number;
}

export type ToService =
  | { kind: 'stats' }
  /** Order service: place orders `from` (inclusive) to `to` (exclusive). */
  | { kind: 'place'; from: number; to: number }
  /** Order service: publish one PaymentReceived again with the id of the first one (a producer retry). */
  | { kind: 'duplicate-payment' };

export type FromService =
  | { kind: 'ready'; group: string }
  | { kind: 'stats'; group: string; stats: ServiceStats }
  | { kind: 'placed'; count: number; events: number }
  | { kind: 'log'; line: string };
