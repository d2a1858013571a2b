// What a real project's definitions module exports: only the current definition of each event (here OrderPlaced v3).
// The schema CI gate reads it: npm run schema:check -w examples (checked against tidings.schema.lock.json here).
export { OrderPlacedV3 as OrderPlaced } from './events.js';
