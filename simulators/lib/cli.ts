import { parseArgs } from 'node:util';

/** Parses `--name value` flags with numeric defaults; `--help` prints them. */
export function numericFlags<T extends Record<string, number | string>>(defaults: T, usage: string): T {
  const options = Object.fromEntries(Object.keys(defaults).map((k) => [k, { type: 'string' as const }]));
  const { values } = parseArgs({ options: { ...options, help: { type: 'boolean' } }, allowPositionals: false });
  if (values.help) {
    process.stdout.write(`${usage}\n\nflags (default):\n${Object.entries(defaults).map(([k, v]) => `  --${k} (${v})`).join('\n')}\n`);
    process.exit(0);
  }
  const result: Record<string, number | string> = { ...defaults };
  for (const [key, fallback] of Object.entries(defaults)) {
    const given = (values as Record<string, unknown>)[key];
    if (typeof given !== 'string') continue;
    if (typeof fallback === 'number') {
      const n = Number(given);
      if (!Number.isFinite(n)) throw new Error(`--${key} must be a number, got "${given}"`);
      result[key] = n;
    } else {
      result[key] = given;
    }
  }
  return result as T;
}
