/** Reading the deployment files in tests (test/unit/deploy-*.test.ts): YAML documents and plain-object checks. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const obj = (v: unknown, what: string): Obj => {
  assert.ok(isObj(v), `${what} must be a mapping`);
  return v;
};
export const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Every non-empty document of the file, failing on any YAML error. `merge`: resolve `<<: *anchor` keys. */
export function yamlDocuments(path: string, options: { merge?: boolean } = {}): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(readFileSync(path, 'utf8'), { merge: options.merge ?? false })) {
    assert.deepEqual(doc.errors.map((e) => e.message), [], `${path}: YAML errors`);
    const value: unknown = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}
