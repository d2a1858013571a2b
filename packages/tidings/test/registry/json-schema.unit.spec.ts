/**
 * `definition.jsonSchema()`: derived from zod 4, given as is for TypeBox, and for a library that cannot produce one
 * (valibot without its converter) an INVALID_CONFIG error saying what to do, or the converter's output.
 */
import { Type } from '@sinclair/typebox';
import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  defineEvent,
  isTidingsError,
  toJsonSchema,
  type JsonSchemaConverter,
  type StandardSchemaV1,
} from 'tidings';

describe('definition.jsonSchema()', () => {
  it('derives the input JSON Schema from zod 4 (draft 2020-12; defaults make a field optional)', () => {
    const OrderPlaced = defineEvent('OrderPlaced', {
      schema: z.object({
        orderId: z.string(),
        total: z.number().min(0),
        currency: z.enum(['EUR', 'USD']).default('EUR'),
        note: z.string().optional(),
      }),
      key: 'orderId',
    });
    const schema = OrderPlaced.jsonSchema();
    expect(schema).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      properties: {
        orderId: { type: 'string' },
        total: { type: 'number', minimum: 0 },
        currency: { type: 'string', enum: ['EUR', 'USD'], default: 'EUR' },
        note: { type: 'string' },
      },
      required: ['orderId', 'total'],
    });
  });

  it('uses a TypeBox schema as is (symbols dropped), through the jsonSchema option', () => {
    const schema = Type.Object({ orderId: Type.String(), total: Type.Number({ minimum: 0 }) });
    const standard: StandardSchemaV1 = {
      '~standard': {
        version: 1,
        vendor: 'typebox',
        validate: (value) => ({ value }),
      },
    };
    const OrderPlaced = defineEvent('OrderPlaced', {
      schema: standard,
      key: () => 'k',
      jsonSchema: schema,
      naming: 'off',
    });
    const json = OrderPlaced.jsonSchema();
    expect(json).toEqual({
      type: 'object',
      properties: { orderId: { type: 'string' }, total: { type: 'number', minimum: 0 } },
      required: ['orderId', 'total'],
    });
    expect(Object.getOwnPropertySymbols(json)).toEqual([]);
    // A TypeBox object is a JSON Schema itself: toJsonSchema takes it as is too.
    expect(toJsonSchema('t', Object.assign(schema, standard) as unknown as StandardSchemaV1)).toEqual(json);
  });

  it('rejects a valibot schema without a converter with INVALID_CONFIG saying how to give one', () => {
    const OrderPlaced = defineEvent('OrderPlaced', {
      schema: v.object({ orderId: v.string() }),
      key: 'orderId',
    });
    let error: unknown;
    try {
      OrderPlaced.jsonSchema();
    } catch (caught) {
      error = caught;
    }
    expect(isTidingsError(error, 'INVALID_CONFIG')).toBe(true);
    expect((error as Error).message).toMatch(
      /cannot derive a JSON Schema from this valibot schema; pass "jsonSchema"/,
    );
    expect((error as Error).message).toMatch(/converter/);
  });

  it('uses the converter passed for a valibot schema', () => {
    const schema = v.object({ orderId: v.string() });
    const OrderPlaced = defineEvent('OrderPlaced', { schema, key: 'orderId' });
    const converter: JsonSchemaConverter = (candidate) =>
      candidate === schema
        ? { type: 'object', properties: { orderId: { type: 'string' } }, required: ['orderId'] }
        : undefined;
    expect(OrderPlaced.jsonSchema(converter)).toEqual({
      type: 'object',
      properties: { orderId: { type: 'string' } },
      required: ['orderId'],
    });
    expect(() => OrderPlaced.jsonSchema(() => undefined)).toThrow(/cannot derive a JSON Schema/);
  });
});
