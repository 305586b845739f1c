/**
 * Enrichment for the analysts: every shop interaction the recommendations apply becomes a row of `shop_interactions`
 * in QuestDB, joined with the catalogue (category, price) and the customer's profile as it stood before the event
 * (segment), so SQL can group sales by category and segment without a join of its own.
 *
 * Exactly once: DEDUP UPSERT KEYS(ts, event_id), and the rows of a partition are written by its flush before the KV
 * state and the checkpoint, so a replay after a crash writes the same rows again (the same values: the profile before
 * an event is the same on every replay) and the upsert keeps one.
 */
import type { Logger } from '../../../../shared/logger.js';
import { ensureSpecTable, type AnalyticsTableSpec } from '../../sinks/questdb-analytics-sink.js';
import { IlpHttpWriter } from '../../sinks/ilp-http-writer.js';
import type { QuestDbRest } from '../../sinks/questdb-rest.js';
import type { Enrichment, Interaction } from '../domain/index.js';

export const SHOP_INTERACTIONS_TABLE = 'shop_interactions';

export const shopInteractionsTableSpec: AnalyticsTableSpec = {
  table: SHOP_INTERACTIONS_TABLE,
  columns: [
    { name: 'ts', sqlType: 'TIMESTAMP' },
    { name: 'event_id', sqlType: 'VARCHAR' },
    { name: 'customer_id', sqlType: 'VARCHAR' },
    { name: 'kind', sqlType: 'SYMBOL' },
    { name: 'product_id', sqlType: 'VARCHAR' },
    { name: 'category', sqlType: 'SYMBOL' },
    { name: 'segment', sqlType: 'SYMBOL' },
    { name: 'price', sqlType: 'DOUBLE' },
    { name: 'quantity', sqlType: 'LONG' },
    { name: 'rating', sqlType: 'LONG' },
    { name: 'stream_partition', sqlType: 'LONG' },
  ],
  dedupKeys: ['ts', 'event_id'],
};

export async function ensureShopInteractionsTable(rest: Pick<QuestDbRest, 'exec'>, log: Logger): Promise<void> {
  await ensureSpecTable(rest, shopInteractionsTableSpec, log);
}

export interface QuestDbTarget {
  httpUrl: string;
  username?: string | undefined;
  password?: string | undefined;
  requestTimeoutMs: number;
}

/** One partition's rows: buffered while its batches are applied, written by its flush. */
export class ShopInteractionRows {
  private readonly writer: IlpHttpWriter;
  private pending = 0;

  constructor(
    target: QuestDbTarget,
    private readonly partition: number,
  ) {
    this.writer = new IlpHttpWriter({ ...target, retryTimeoutMs: 0 });
  }

  add(interaction: Interaction, enrichment: Enrichment): void {
    const row = this.writer.table(SHOP_INTERACTIONS_TABLE).symbol('kind', interaction.kind);
    if (enrichment.category !== null) row.symbol('category', enrichment.category);
    row.symbol('segment', enrichment.segment);
    row.stringColumn('event_id', interaction.eventId).stringColumn('customer_id', interaction.customerId);
    if (interaction.productId !== undefined) row.stringColumn('product_id', interaction.productId);
    if (enrichment.price !== null) row.floatColumn('price', enrichment.price);
    if (interaction.quantity !== undefined) row.intColumn('quantity', Math.round(interaction.quantity));
    if (interaction.rating !== undefined) row.intColumn('rating', interaction.rating);
    row.intColumn('stream_partition', this.partition).at(interaction.at * 1000, 'us');
    this.pending++;
  }

  /**
   * Writes the rows added before the call (rows added while the request is in flight wait for the next flush);
   * rejects when QuestDB did not take them (the writer keeps them and sends them first next time).
   */
  async flush(): Promise<number> {
    if (this.pending === 0) return 0;
    const rows = this.pending;
    this.pending = 0;
    try {
      await this.writer.flush();
    } catch (error) {
      this.pending += rows;
      throw error;
    }
    return rows;
  }

  async close(): Promise<void> {
    await this.writer.close();
  }
}
