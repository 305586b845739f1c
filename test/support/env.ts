/** Where the test stack runs; set by scripts/test.ts (npm test), which starts the real servers. */
export interface TestStack {
  natsUrls: string[];
  questdbHttp: string;
  questdbPgPort: number;
  stackDir: string;
}

export function testStack(): TestStack {
  const nats = process.env.PIPELINE_NATS_URLS;
  const questdb = process.env.PIPELINE_QUESTDB_HTTP;
  if (!nats || !questdb) {
    throw new Error('integration tests need the test stack: run them with `npm test` (it starts NATS and QuestDB)');
  }
  return {
    natsUrls: nats.split(','),
    questdbHttp: questdb,
    questdbPgPort: Number(process.env.PIPELINE_QUESTDB_PG_PORT ?? 18812),
    stackDir: process.env.PIPELINE_STACK_DIR ?? '.runtime/test-stack',
  };
}
