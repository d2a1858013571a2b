/**
 * `tidings/registry`: the schema registry. Subjects (one per event type) hold versions of JSON Schema documents,
 * checked under a compatibility mode (BACKWARD by default) when registered; stored in the embedded log's data
 * directory, in PostgreSQL or in memory; guarding a bus's publishes (`createBus({ registry })`); and the schema
 * lock file of the CI gate (`tidings schema lock|check|diff`).
 */
export {
  compatibilityModes,
  defaultCompatibilityMode,
  isCompatibilityMode,
  modeRules,
  parseCompatibilityMode,
  type CompatibilityMode,
  type ModeRules,
} from './modes.js';
export {
  compatibilityRules,
  readerIssues,
  type CompatibilityIssue,
  type CompatibilityRule,
  type SideNames,
} from './reader-writer.js';
export {
  checkCompatibility,
  formatViolation,
  type CompatibilityResult,
  type CompatibilityViolation,
  type HistoricVersion,
} from './compatibility.js';
export { diffSchemas, type SchemaChange } from './diff.js';
export { canonicalJson } from './json-pointer.js';
export type { AdmissionContext, Registration, SchemaStore, StoredSchema, StoredVersion } from './store.js';
export { createMemorySchemaStore } from './memory-store.js';
export { createSqliteSchemaStore, registryFileName, type SqliteSchemaStoreOptions } from './sqlite-store.js';
export { createPostgresSchemaStore, type PostgresSchemaStoreOptions } from './postgres-store.js';
export {
  canonicalSchema,
  checkSubject,
  createSchemaRegistry,
  incompatibleError,
  maxSchemaBytes,
  maxSubjectLength,
  maxVersionsPerSubject,
  type RegisteredVersion,
  type SchemaRegistry,
  type SchemaRegistryOptions,
} from './registry.js';
export {
  collectDefinitions,
  compareWithLock,
  currentSchemas,
  emptyLock,
  formatLock,
  lockFileName,
  parseLock,
  updateLock,
  type LockedSubject,
  type LockedVersion,
  type SchemaLock,
  type SubjectReport,
} from './lock.js';
