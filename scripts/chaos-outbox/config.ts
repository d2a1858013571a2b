// The chaos run's configuration, shared by the harness and its child processes (passed as JSON in argv).
import { z } from 'zod';
import { defineEvent } from 'tidings';

export type DbKind = 'postgres' | 'mariadb' | 'sqlite';
export type TransportKind = 'log' | 'nats';

export interface ChaosConfig {
  db: DbKind;
  transport: TransportKind;
  /** This run's id: names its schemas, tables, files and NATS streams. */
  run: string;
  /** postgres / mariadb: the server URL. */
  url: string;
  /** Where this run keeps its files: the embedded log, SQLite databases, child logs. */
  dir: string;
  natsUrl: string;
  /** How many keys (orders) producers spread their changes over. */
  keys: number;
  /** The share of producer transactions rolled back on purpose, after enqueueing. */
  rollbackRate: number;
}

/** A committed change of an order: its version is 1, 2, 3, ... per order, with no gaps. */
export const OrderRevised = defineEvent('OrderRevised', {
  schema: z.object({ orderId: z.string(), version: z.number().int().positive() }),
  key: 'orderId',
  topic: 'chaos-orders',
});

export const consumerGroup = 'chaos-effects';

export function parseConfig(text: string | undefined): ChaosConfig {
  if (text === undefined) throw new Error('pass the chaos configuration as JSON in argv[2]');
  return JSON.parse(text) as ChaosConfig;
}
