/**
 * Telemetry with planted data-quality defects at exact rates, for checking the hub's data_quality scores against
 * what was planted (test/integration/data-quality.test.ts) and for showing the quality panel a source gone bad:
 *
 *   npx tsx simulators/quality-defects.ts --url http://127.0.0.1:8080/v1/events --devices 4 --rate 40 --duration 120
 *
 * Defects are chosen by the accepted event's index modulo 100, not at random, so any 100 consecutive events carry
 * exactly the planted shares (missing `unit`, out-of-range temperature, a duplicate of an earlier event, a clock
 * 30 s ahead, an event 3 minutes late); the defect residues are all below 50 and a duplicate copies the event 50
 * before it, which is always clean. Invalid payloads (a string where the schema wants a number) are added between
 * the accepted ones so that they are `invalid` of all submissions. Every other event is stamped `lagMs` before it
 * is sent (ingest lag).
 */
import { pathToFileURL } from 'node:url';
import { numericFlags } from './lib/cli.js';

export interface PlantedRates {
  /** Shares of accepted events (0..1); together at most 0.5. */
  missingUnit: number;
  outOfRange: number;
  duplicate: number;
  future: number;
  late: number;
  /** Share of all submissions that the edge must refuse. */
  invalid: number;
}

export const CLEAN: PlantedRates = { missingUnit: 0, outOfRange: 0, duplicate: 0, future: 0, late: 0, invalid: 0 };

/** How many of each defect were planted, and how many events the edge accepts (duplicates included). */
export type PlantedCounts = { accepted: number } & Record<keyof PlantedRates, number>;

type Defect = Exclude<keyof PlantedCounts, 'accepted' | 'invalid'>;
const ORDER: Defect[] = ['missingUnit', 'outOfRange', 'duplicate', 'future', 'late'];

export class DefectPlanter {
  readonly planted: PlantedCounts = { accepted: 0, missingUnit: 0, outOfRange: 0, duplicate: 0, future: 0, late: 0, invalid: 0 };
  private index = 0;
  private invalidDebt = 0;
  /** The last 100 accepted bodies, by index modulo 100. */
  private readonly recent: Array<Record<string, unknown> | undefined> = new Array(100);
  /** Residue ranges [from, to) of each defect. */
  private readonly ranges: Array<[Defect, number, number]> = [];

  constructor(
    private readonly prefix: string,
    private readonly devices: number,
    private readonly rates: PlantedRates,
    private readonly options: { lagMs: number; futureByMs: number; lateByMs: number } = { lagMs: 0, futureByMs: 30_000, lateByMs: 180_000 },
  ) {
    let from = 0;
    for (const defect of ORDER) {
      const width = Math.round(rates[defect] * 100);
      this.ranges.push([defect, from, from + width]);
      from += width;
    }
    if (from > 50) throw new RangeError(`planted defects add up to ${from} %: at most 50 % (a duplicate copies a clean event 50 before it)`);
    if (rates.invalid < 0 || rates.invalid >= 1) throw new RangeError('invalid must be in [0, 1)');
  }

  /** One reading per device, as NDJSON lines (`type` included), for an event time of `nowMs - lagMs`. */
  tick(nowMs: number): string[] {
    const lines: string[] = [];
    for (let d = 0; d < this.devices; d++) {
      lines.push(JSON.stringify(this.next(`${this.prefix}-${d}`, nowMs)));
      this.invalidDebt += this.rates.invalid / (1 - this.rates.invalid);
      while (this.invalidDebt >= 1) {
        this.invalidDebt -= 1;
        this.planted.invalid++;
        lines.push(JSON.stringify({ type: 'device.telemetry', event_id: `${this.prefix}-bad-${this.planted.invalid}`, device_id: `${this.prefix}-${d}`, timestamp: nowMs, metric: 'temperature', value: 'not-a-number', unit: 'C' }));
      }
    }
    return lines;
  }

  private next(device: string, nowMs: number): Record<string, unknown> {
    const i = this.index++;
    const residue = i % 100;
    const defect = this.ranges.find(([, from, to]) => residue >= from && residue < to)?.[0];
    this.planted.accepted++;
    const earlier = this.recent[(i + 50) % 100];
    if (defect === 'duplicate' && earlier && i >= 50) {
      this.planted.duplicate++;
      this.recent[residue] = undefined;
      return earlier;
    }
    let timestamp = nowMs - this.options.lagMs;
    let value = 20 + (i % 7) * 0.1;
    const body: Record<string, unknown> = { type: 'device.telemetry', event_id: `${this.prefix}-${i}`, device_id: device, metric: 'temperature' };
    if (defect === 'outOfRange') {
      value = 500;
      this.planted.outOfRange++;
    } else if (defect === 'future') {
      timestamp = nowMs + this.options.futureByMs;
      this.planted.future++;
    } else if (defect === 'late') {
      timestamp = nowMs - this.options.lateByMs;
      this.planted.late++;
    }
    Object.assign(body, { timestamp, value });
    if (defect === 'missingUnit') this.planted.missingUnit++;
    else body.unit = 'C';
    // Only clean events are copied as duplicates later (their index is 50 apart, so the copy falls in a defect range).
    this.recent[residue] = defect === undefined || defect === 'duplicate' ? body : undefined;
    return body;
  }
}

async function main(): Promise<void> {
  const flags = numericFlags(
    { url: 'http://127.0.0.1:8080/v1/events', devices: 4, rate: 40, duration: 60, lag: 0 },
    'Telemetry with planted defects (10 % without unit, 5 % out of range, 4 % duplicates, 3 % from the future, 2 % late, 2 % invalid) POSTed to an edge agent.',
  );
  const url = flags.url;
  const planter = new DefectPlanter(`quality-sim-${Date.now().toString(36)}`, flags.devices, { missingUnit: 0.1, outOfRange: 0.05, duplicate: 0.04, future: 0.03, late: 0.02, invalid: 0.02 }, { lagMs: flags.lag, futureByMs: 30_000, lateByMs: 180_000 });
  const intervalMs = (1000 * flags.devices) / flags.rate;
  const end = Date.now() + flags.duration * 1000;
  while (Date.now() < end) {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: planter.tick(Date.now()).join('\n') });
    await response.arrayBuffer();
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  process.stdout.write(`${JSON.stringify(planter.planted)}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
