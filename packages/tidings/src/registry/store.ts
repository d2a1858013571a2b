/**
 * Where the schema registry keeps subjects, versions and compatibility settings: one interface, implemented in
 * memory, in the embedded log's data directory (SQLite) and in PostgreSQL.
 */
import type { CompatibilityMode } from './modes.js';

/** A version of a subject as stored. */
export interface StoredVersion {
  subject: string;
  /** The version within the subject: 1, 2, ... in registration order. */
  version: number;
  /** The schema's global id: the same document under two subjects has one id. */
  id: number;
  /** The JSON Schema document as canonical JSON text (object keys sorted). */
  schema: string;
  /** Milliseconds since the epoch. */
  registeredAt: number;
}

/** A schema by id. */
export interface StoredSchema {
  id: number;
  /** Canonical JSON text. */
  schema: string;
}

/** What {@link SchemaStore.register} shows the admission check, read inside the registration's transaction. */
export interface AdmissionContext {
  /** The subject's versions, ascending. */
  history: readonly StoredVersion[];
  /** The mode in force for the subject: its own, else the global one, else BACKWARD. */
  mode: CompatibilityMode;
}

/** The outcome of a registration. */
export interface Registration {
  version: StoredVersion;
  /** False when the subject already held this exact document (nothing was written). */
  created: boolean;
}

/**
 * Durable storage of the registry. Implementations serialise registrations of one subject (across processes, for
 * the durable ones), so that the admission check always sees the history the new version is appended to.
 */
export interface SchemaStore {
  /** A short name for messages (`memory`, `sqlite:<file>`, `postgres:<schema>`). */
  readonly name: string;
  /**
   * Registers `schema` (canonical JSON text) under `subject`. If the subject already holds the same document, resolves
   * with that version and `created: false` without calling `admit`. Otherwise calls `admit` inside the transaction;
   * if it throws, nothing is written and the error is the rejection; else appends the next version and resolves
   * with it.
   */
  register(
    subject: string,
    schema: string,
    admit: (context: AdmissionContext) => void,
  ): Promise<Registration>;
  /** Every subject with at least one version, sorted. */
  subjects(): Promise<string[]>;
  /** The subject's versions, ascending (empty for an unknown subject). */
  versions(subject: string): Promise<StoredVersion[]>;
  /** A schema by its global id. */
  schemaById(id: number): Promise<StoredSchema | undefined>;
  /** The subject's own compatibility mode (`subject` given) or the global one; `undefined` when never set. */
  getMode(subject?: string): Promise<CompatibilityMode | undefined>;
  /** Sets the subject's own mode, or the global one without `subject`. */
  setMode(mode: CompatibilityMode, subject?: string): Promise<void>;
  /** Releases connections and files. The store is unusable afterwards. */
  close(): Promise<void>;
}

/** Runs a synchronous store operation as a promise: its value, or a rejection with what it threw. */
export function promised<T>(operation: () => T): Promise<T> {
  try {
    return Promise.resolve(operation());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}
