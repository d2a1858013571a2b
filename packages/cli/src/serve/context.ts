/**
 * What the routes of `tidings serve` share: the CLI's process dependencies and the options the server runs with.
 */
import type { CliDeps, CommonOptions } from '../context.js';

/** The server's settings, as parsed from the command line. */
export interface ServeContext {
  deps: CliDeps;
  /** The data directory and how to open it. */
  common: CommonOptions;
  /** True with `--metrics`: `GET /metrics` serves the Prometheus text format. */
  metrics: boolean;
  /**
   * With `--registry-database-url`: the schema registry is kept in this PostgreSQL database (schema `tidings`)
   * rather than in the data directory's `registry.db`.
   */
  registryDatabaseUrl?: string;
  /** With `--registry-database-schema`: the PostgreSQL schema of the registry's tables. Default `tidings`. */
  registryDatabaseSchema?: string;
}
