// The same module after a breaking change: OrderPlaced v4 (amount replaced by a required amountCents). The schema CI
// gate refuses it: npm run schema:check:breaking -w examples exits 1 with the diff.
export { OrderPlacedV4 as OrderPlaced } from './events.js';
