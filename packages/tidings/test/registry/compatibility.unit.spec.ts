/**
 * The compatibility checker: every rule with a compatible and an incompatible case, each error naming the field, the
 * rule and the mode; then the modes (directions, transitive reach, NONE).
 */
import { describe, expect, it } from 'vitest';
import type { JsonSchema } from 'tidings';
import {
  checkCompatibility,
  formatViolation,
  type CompatibilityMode,
  type CompatibilityResult,
} from 'tidings/registry';

const obj = (
  properties: Record<string, JsonSchema>,
  required: string[] = [],
  extra: Record<string, unknown> = {},
) => ({
  type: 'object',
  properties,
  required,
  ...extra,
});

/** Checks `next` against `[previous]` (version 1) under `mode`. */
function check(
  previous: JsonSchema,
  next: JsonSchema,
  mode: CompatibilityMode = 'BACKWARD',
): CompatibilityResult {
  return checkCompatibility(next, [{ version: 1, schema: previous }], mode);
}

function expectCompatible(result: CompatibilityResult): void {
  expect(result.violations.map(formatViolation)).toEqual([]);
  expect(result.compatible).toBe(true);
}

function expectBreaks(result: CompatibilityResult, path: string, rule: string): void {
  expect(result.compatible).toBe(false);
  const violation = result.violations.find((v) => v.path === path && v.rule === rule);
  expect(violation, `violations: ${result.violations.map(formatViolation).join(' | ')}`).toBeDefined();
  const line = formatViolation(violation!);
  // Every error names the field, the rule and the mode.
  expect(line).toContain(path === '(root)' ? 'the document root' : `field "${path}"`);
  expect(line).toContain(`rule ${rule}`);
  expect(line).toContain(result.mode);
}

const base = obj({ id: { type: 'string' }, total: { type: 'number' } }, ['id', 'total']);

describe('rules', () => {
  describe('property added', () => {
    it('compatible: an optional property', () => {
      expectCompatible(check(base, obj({ ...base.properties, note: { type: 'string' } }, ['id', 'total'])));
    });
    it('incompatible: a required property without a default (BACKWARD: old data lacks it)', () => {
      const result = check(
        base,
        obj({ ...base.properties, currency: { type: 'string' } }, ['id', 'total', 'currency']),
      );
      expectBreaks(result, 'currency', 'PROPERTY_ADDED_REQUIRED');
      expect(formatViolation(result.violations[0]!)).toMatch(/make it optional or give it a default/);
    });
  });

  describe('property removed', () => {
    it('compatible: from an open object (BACKWARD: the new reader ignores it)', () => {
      expectCompatible(check(obj({ ...base.properties, note: { type: 'string' } }, ['id', 'total']), base));
    });
    it('incompatible: when the reader is closed (additionalProperties: false)', () => {
      const previous = obj({ ...base.properties, note: { type: 'string' } }, ['id', 'total']);
      const next = obj(base.properties, ['id', 'total'], { additionalProperties: false });
      expectBreaks(check(previous, next), 'note', 'PROPERTY_REMOVED_CLOSED');
    });
    it('incompatible under FORWARD: removing a required property (old readers require it)', () => {
      expectBreaks(
        check(base, obj({ id: { type: 'string' } }, ['id']), 'FORWARD'),
        'total',
        'PROPERTY_ADDED_REQUIRED',
      );
    });
  });

  describe('required changes', () => {
    it('compatible: required → optional (BACKWARD)', () => {
      expectCompatible(check(base, obj(base.properties, ['id'])));
    });
    it('incompatible: optional → required (BACKWARD)', () => {
      expectBreaks(check(obj(base.properties, ['id']), base), 'total', 'PROPERTY_MADE_REQUIRED');
    });
  });

  describe('type widening and narrowing', () => {
    it('compatible: integer → number (widening)', () => {
      expectCompatible(check(obj({ n: { type: 'integer' } }, ['n']), obj({ n: { type: 'number' } }, ['n'])));
    });
    it('compatible: string → string | null (widening)', () => {
      expectCompatible(check(obj({ s: { type: 'string' } }), obj({ s: { type: ['string', 'null'] } })));
      expectCompatible(
        check(obj({ s: { type: 'string' } }), obj({ s: { anyOf: [{ type: 'string' }, { type: 'null' }] } })),
      );
    });
    it('incompatible: number → integer (narrowing)', () => {
      expectBreaks(
        check(obj({ n: { type: 'number' } }, ['n']), obj({ n: { type: 'integer' } }, ['n'])),
        'n',
        'TYPE_NARROWED',
      );
    });
    it('incompatible: string → number (a different type)', () => {
      expectBreaks(
        check(obj({ s: { type: 'string' } }), obj({ s: { type: 'number' } })),
        's',
        'TYPE_NARROWED',
      );
    });
    it('incompatible: a union branch dropped (string | null → string)', () => {
      const previous = obj({ s: { anyOf: [{ type: 'string' }, { type: 'null' }] } });
      expectBreaks(check(previous, obj({ s: { type: 'string' } })), 's', 'TYPE_NARROWED');
    });
    it('incompatible: a reader union that accepts none of a writer type', () => {
      const next = obj({ s: { anyOf: [{ type: 'string' }, { type: 'null' }] } });
      expectBreaks(check(obj({ s: { type: 'number' } }), next), 's', 'UNION_NARROWED');
    });
    it('incompatible: a tightened bound', () => {
      const result = check(
        obj({ qty: { type: 'integer', minimum: 0 } }),
        obj({ qty: { type: 'integer', minimum: 1 } }),
      );
      expectBreaks(result, 'qty', 'CONSTRAINT_TIGHTENED');
    });
    it('compatible: a loosened bound', () => {
      expectCompatible(
        check(
          obj({ name: { type: 'string', maxLength: 10 } }),
          obj({ name: { type: 'string', maxLength: 20 } }),
        ),
      );
    });
  });

  describe('enum values', () => {
    const kinds = (values: string[]) => obj({ kind: { type: 'string', enum: values } }, ['kind']);
    it('added: compatible under BACKWARD (the new reader knows every old value)', () => {
      expectCompatible(check(kinds(['a', 'b']), kinds(['a', 'b', 'c'])));
    });
    it('added: incompatible under FORWARD (old readers do not know the new value)', () => {
      const result = check(kinds(['a', 'b']), kinds(['a', 'b', 'c']), 'FORWARD');
      expectBreaks(result, 'kind', 'ENUM_NARROWED');
      expect(formatViolation(result.violations[0]!)).toContain('"c"');
    });
    it('removed: incompatible under BACKWARD (old data holds the removed value)', () => {
      const result = check(kinds(['a', 'b', 'c']), kinds(['a', 'b']));
      expectBreaks(result, 'kind', 'ENUM_NARROWED');
      expect(formatViolation(result.violations[0]!)).toContain('"c"');
    });
    it('removed: compatible under FORWARD', () => {
      expectCompatible(check(kinds(['a', 'b', 'c']), kinds(['a', 'b']), 'FORWARD'));
    });
  });

  describe('nested objects', () => {
    const customer = (address: JsonSchema) => obj({ customer: obj({ address }, ['address']) }, ['customer']);
    it('compatible: an optional property added deep inside', () => {
      expectCompatible(
        check(
          customer(obj({ city: { type: 'string' } }, ['city'])),
          customer(obj({ city: { type: 'string' }, zip: { type: 'string' } }, ['city'])),
        ),
      );
    });
    it('incompatible: a required property added deep inside, named by its dotted path', () => {
      expectBreaks(
        check(
          customer(obj({ city: { type: 'string' } }, ['city'])),
          customer(obj({ city: { type: 'string' }, zip: { type: 'string' } }, ['city', 'zip'])),
        ),
        'customer.address.zip',
        'PROPERTY_ADDED_REQUIRED',
      );
    });
    it('follows local $refs', () => {
      const withDefs = (zip: boolean) => ({
        ...obj({ address: { $ref: '#/$defs/Address' } }, ['address']),
        $defs: {
          Address: obj(
            { city: { type: 'string' }, zip: { type: 'string' } },
            zip ? ['city', 'zip'] : ['city'],
          ),
        },
      });
      expectCompatible(check(withDefs(true), withDefs(false)));
      expectBreaks(check(withDefs(false), withDefs(true)), 'address.zip', 'PROPERTY_MADE_REQUIRED');
    });
  });

  describe('arrays', () => {
    const lines = (item: JsonSchema) => obj({ lines: { type: 'array', items: item } }, ['lines']);
    const line = (extra: Record<string, JsonSchema>, required: string[]) =>
      obj({ sku: { type: 'string' }, ...extra }, ['sku', ...required]);
    it('compatible: an optional property added to the items', () => {
      expectCompatible(check(lines(line({}, [])), lines(line({ qty: { type: 'integer' } }, []))));
    });
    it('incompatible: a required property added to the items, named lines[].qty', () => {
      expectBreaks(
        check(lines(line({}, [])), lines(line({ qty: { type: 'integer' } }, ['qty']))),
        'lines[].qty',
        'PROPERTY_ADDED_REQUIRED',
      );
    });
    it('incompatible: the item type narrowed', () => {
      expectBreaks(
        check(
          obj({ tags: { type: 'array', items: { type: ['string', 'number'] } } }),
          obj({ tags: { type: 'array', items: { type: 'string' } } }),
        ),
        'tags[]',
        'TYPE_NARROWED',
      );
    });
  });

  describe('additionalProperties', () => {
    it('compatible: opening a closed object', () => {
      expectCompatible(check({ ...base, additionalProperties: false }, base));
    });
    it('incompatible: closing an open object (old data may carry extra properties)', () => {
      expectBreaks(
        check(base, { ...base, additionalProperties: false }),
        '*',
        'ADDITIONAL_PROPERTIES_NARROWED',
      );
    });
    it('incompatible: narrowing the schema of additional properties (a map of numbers → integers)', () => {
      const map = (type: string) => ({ type: 'object', additionalProperties: { type } });
      expectCompatible(check(map('integer'), map('number')));
      expectBreaks(check(map('number'), map('integer')), '*', 'ADDITIONAL_PROPERTIES_NARROWED');
    });
  });

  describe('defaults', () => {
    it('compatible: a required property added with a default', () => {
      const next = obj({ ...base.properties, currency: { type: 'string', default: 'EUR' } }, [
        'id',
        'total',
        'currency',
      ]);
      expectCompatible(check(base, next));
    });
    it('compatible: optional → required with a default', () => {
      expectCompatible(
        check(
          obj(base.properties, ['id']),
          obj({ ...base.properties, total: { type: 'number', default: 0 } }, ['id', 'total']),
        ),
      );
    });
    it('incompatible: the same change without the default', () => {
      expectBreaks(
        check(base, obj({ ...base.properties, currency: { type: 'string' } }, ['id', 'total', 'currency'])),
        'currency',
        'PROPERTY_ADDED_REQUIRED',
      );
    });
  });
});

describe('modes', () => {
  const v1 = obj({ id: { type: 'string' } }, ['id']);
  const v2 = obj({ id: { type: 'string' }, note: { type: 'string' } }, ['id']);
  const v3 = obj({ id: { type: 'string' }, note: { type: 'string' } }, ['id', 'note']); // note made required
  const history = [
    { version: 1, schema: v1 },
    {
      version: 2,
      schema: {
        ...v2,
        properties: { ...v2.properties, note: { type: 'string', default: '' } },
        required: ['id', 'note'],
      },
    },
  ];

  it('BACKWARD checks only the latest version; BACKWARD_TRANSITIVE every one', () => {
    // v3 requires note without a default: version 2 (which had the default and required it) is fine, version 1 is not.
    expectCompatible(checkCompatibility(v3, history, 'BACKWARD'));
    const transitive = checkCompatibility(v3, history, 'BACKWARD_TRANSITIVE');
    expect(transitive.compatible).toBe(false);
    expect(transitive.comparedWith).toEqual([1, 2]);
    expect(transitive.violations.map((v) => [v.version, v.path, v.rule])).toEqual([
      [1, 'note', 'PROPERTY_ADDED_REQUIRED'],
    ]);
    expect(formatViolation(transitive.violations[0]!)).toContain(
      'BACKWARD_TRANSITIVE compatibility with version 1',
    );
  });

  it('FORWARD checks that old readers read new data; FORWARD_TRANSITIVE against every version', () => {
    const closed = (schema: JsonSchema) => ({ ...schema, additionalProperties: false });
    const h = [
      { version: 1, schema: closed(v2) },
      { version: 2, schema: closed(v1) },
    ];
    const next = closed(v1);
    expectCompatible(checkCompatibility(next, h, 'FORWARD'));
    expectCompatible(checkCompatibility(next, h, 'FORWARD_TRANSITIVE'));
    const withExtra = closed(obj({ id: { type: 'string' }, extra: { type: 'string' } }, ['id']));
    const result = checkCompatibility(withExtra, h, 'FORWARD_TRANSITIVE');
    expect(result.violations.map((v) => [v.version, v.direction, v.rule])).toEqual([
      [1, 'forward', 'PROPERTY_REMOVED_CLOSED'],
      [2, 'forward', 'PROPERTY_REMOVED_CLOSED'],
    ]);
  });

  it('FULL checks both directions; FULL_TRANSITIVE against every version', () => {
    const kinds = (values: string[]) => obj({ kind: { enum: values } }, ['kind']);
    const added = checkCompatibility(kinds(['a', 'b']), [{ version: 1, schema: kinds(['a']) }], 'FULL');
    expect(added.violations.map((v) => v.direction)).toEqual(['forward']);
    const removed = checkCompatibility(kinds(['a']), [{ version: 1, schema: kinds(['a', 'b']) }], 'FULL');
    expect(removed.violations.map((v) => v.direction)).toEqual(['backward']);
    expectCompatible(checkCompatibility(v2, [{ version: 1, schema: v1 }], 'FULL'));
    const transitive = checkCompatibility(
      kinds(['a']),
      [
        { version: 1, schema: kinds(['a', 'b']) },
        { version: 2, schema: kinds(['a']) },
      ],
      'FULL_TRANSITIVE',
    );
    expect(transitive.violations.map((v) => [v.version, v.direction])).toEqual([[1, 'backward']]);
  });

  it('NONE accepts anything, and an empty history is compatible under every mode', () => {
    expectCompatible(checkCompatibility({ type: 'number' }, [{ version: 1, schema: v1 }], 'NONE'));
    expectCompatible(checkCompatibility(v3, [], 'FULL_TRANSITIVE'));
  });
});

describe('zod output', () => {
  it("ignores zod's safe-integer bounds on int(): number → int is reported once, as TYPE_NARROWED", () => {
    const result = check(
      obj({ n: { type: 'number' } }, ['n']),
      obj({ n: { type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 } }, ['n']),
    );
    expect(result.violations.map((v) => v.rule)).toEqual(['TYPE_NARROWED']);
  });
});

describe('shapes', () => {
  it('checks recursive schemas ($ref to the root) without looping', () => {
    const tree = (valueType: string) => ({
      type: 'object',
      properties: { value: { type: valueType }, children: { type: 'array', items: { $ref: '#' } } },
      required: ['value'],
    });
    expectCompatible(check(tree('integer'), tree('number')));
    expectBreaks(check(tree('number'), tree('integer')), 'value', 'TYPE_NARROWED');
  });

  it('treats true as any value and a false union branch as no value', () => {
    expectCompatible(check(obj({ x: { type: 'string' } }), obj({ x: true as unknown as JsonSchema })));
    expectCompatible(
      check(obj({ x: { anyOf: [{ type: 'string' }, false] } }), obj({ x: { type: 'string' } })),
    );
    expectBreaks(
      check(obj({ x: true as unknown as JsonSchema }), obj({ x: { type: 'string' } })),
      'x',
      'TYPE_NARROWED',
    );
  });
});
