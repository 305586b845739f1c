/**
 * The one ajv set-up event schemas are compiled with (the agent's validator and `npm run schemas -- check`), so a
 * schema that passes the check also compiles in the agent: draft 2020-12, strict mode, formats, our x- keywords.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv-formats ships CommonJS; under NodeNext its default export is the module object.
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

export function createSchemaAjv(): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
  addFormats(ajv);
  ajv.addKeyword({ keyword: 'x-partition-key', schemaType: 'string' });
  ajv.addKeyword({ keyword: 'x-questdb', schemaType: 'object' });
  return ajv;
}
