/**
 * Every rule's operator for one stream partition, with the partition's event-time watermark. Pure logic (time is
 * passed in), so the exactly-once machinery around it (partition-processor.ts) can be tested apart from it.
 *
 * Watermark: events of one JetStream partition come from many edge agents, and an agent that was offline drains
 * hours-old events after reconnecting. So the watermark is tracked per agent (bounded out-of-orderness each) and
 * combined as the minimum over agents that sent something recently; an agent silent for `idleTimeoutMs` no longer
 * holds everyone back, and what it sends later is late data (side output), not a stall.
 *
 * Snapshot: the operators' states, the watermark and the stream sequence they cover, as plain JSON. A rule whose
 * definition changed since the snapshot starts empty (its old state means something else); the others resume.
 */
import { createHash } from 'node:crypto';
import type { EventBatch } from '../../../shared/wire.js';
import {
  createOperator,
  PartitionedWatermark,
  type OperatorOutput,
  type OperatorSnapshot,
  type Rule,
  type StreamOperator,
  type WatermarkSettings,
  type WatermarkSnapshot,
} from '../operators/index.js';
import { ResentBatchGuard, type ResentBatchGuardSnapshot } from './resent-batch-guard.js';

export interface OperatorSetSnapshot {
  v: 1;
  /** Last EVENTS stream sequence whose events are in this state. */
  streamSeq: number;
  watermark: WatermarkSnapshot;
  /** Per rule name: the hash of the rule definition the state belongs to, and the operator's snapshot. */
  operators: Record<string, { ruleHash: string; snapshot: OperatorSnapshot }>;
  /** The last ranges seen per agent (absent in snapshots of older hubs). */
  resent?: ResentBatchGuardSnapshot;
}

interface RunningRule {
  rule: Rule;
  hash: string;
  operator: StreamOperator;
}

export function ruleHash(rule: Rule): string {
  return createHash('sha256').update(stableJson(rule)).digest('hex').slice(0, 16);
}

/** Lineage: window results and alerts name the version of the rule that made them (rule_version in QuestDB). */
function stamped(outputs: OperatorOutput[], ruleVersion: string): OperatorOutput[] {
  for (const output of outputs) if (output.type !== 'late_event') output.ruleVersion = ruleVersion;
  return outputs;
}

export class OperatorSet {
  private running = new Map<string, RunningRule>();
  private readonly watermark: PartitionedWatermark;
  private lastWatermark: number | null = null;
  /** Last stream sequence applied; messages at or below it are replays and are skipped. */
  streamSeq = 0;
  /** Batches skipped because their agent had sent the same range before (a resend past the duplicate window). */
  resentBatchesSkipped = 0;
  private readonly resent = new ResentBatchGuard();

  constructor(rules: readonly Rule[], watermarkSettings: WatermarkSettings) {
    this.watermark = new PartitionedWatermark(watermarkSettings);
    this.setRules(rules);
  }

  /** Swaps the rule set: unchanged rules keep their state, changed or new ones start empty, removed ones go. */
  setRules(rules: readonly Rule[]): { added: string[]; changed: string[]; removed: string[] } {
    const next = new Map<string, RunningRule>();
    const added: string[] = [];
    const changed: string[] = [];
    for (const rule of rules) {
      const hash = ruleHash(rule);
      const current = this.running.get(rule.name);
      if (current && current.hash === hash) {
        next.set(rule.name, current);
        continue;
      }
      (current ? changed : added).push(rule.name);
      const operator = createOperator(rule);
      // A new operator starts at the partition's watermark, so it does not fire windows for all of history.
      if (this.lastWatermark !== null) operator.onWatermark(this.lastWatermark);
      next.set(rule.name, { rule, hash, operator });
    }
    const removed = [...this.running.keys()].filter((name) => !next.has(name));
    this.running = next;
    return { added, changed, removed };
  }

  rules(): string[] {
    return [...this.running.keys()];
  }

  /**
   * Applies one message's batch (EVENTS stream sequence `seq`). Returns nothing for a replayed message (seq at
   * or below the state's), so a redelivery after a crash is never counted twice; nor for a batch its agent sent
   * again after the stream's duplicate window (see resent-batch-guard.ts).
   */
  apply(batch: EventBatch, seq: number, nowMs: number): OperatorOutput[] | undefined {
    if (seq <= this.streamSeq) return undefined;
    if (this.resent.seenBefore(batch.agent, batch.first, batch.last, batch.events[0]?.id)) {
      this.streamSeq = seq;
      this.resentBatchesSkipped++;
      return undefined;
    }
    const outputs: OperatorOutput[] = [];
    let newestTs = -Infinity;
    for (const { operator } of this.running.values()) operator.onBatchStart?.(batch.agent);
    for (const event of batch.events) {
      for (const { operator, hash } of this.running.values()) {
        const produced = operator.onEvent(event);
        if (produced.length > 0) outputs.push(...stamped(produced, hash));
      }
      if (event.ts > newestTs) newestTs = event.ts;
    }
    // The watermark only keeps each agent's newest event time: one observation per batch is the same.
    if (newestTs !== -Infinity) this.watermark.observe(batch.agent, Math.floor(newestTs / 1000), nowMs);
    this.streamSeq = seq;
    outputs.push(...this.advance(nowMs));
    return outputs;
  }

  /** Lets processing time move the watermark when agents go idle; call every second or so. */
  advance(nowMs: number): OperatorOutput[] {
    const watermark = this.watermark.current(nowMs);
    if (watermark === null || watermark === this.lastWatermark) return [];
    this.lastWatermark = watermark;
    const outputs: OperatorOutput[] = [];
    for (const { operator, hash } of this.running.values()) {
      const produced = operator.onWatermark(watermark);
      if (produced.length > 0) outputs.push(...stamped(produced, hash));
    }
    return outputs;
  }

  currentWatermark(): number | null {
    return this.lastWatermark;
  }

  snapshot(): OperatorSetSnapshot {
    const operators: OperatorSetSnapshot['operators'] = {};
    for (const [name, { hash, operator }] of this.running) operators[name] = { ruleHash: hash, snapshot: operator.snapshot() };
    return { v: 1, streamSeq: this.streamSeq, watermark: this.watermark.snapshot(), operators, resent: this.resent.snapshot() };
  }

  /** Restores a snapshot; returns the rules that could not resume (changed since, or new) and start empty. */
  restore(snapshot: OperatorSetSnapshot): string[] {
    this.streamSeq = snapshot.streamSeq;
    this.resent.restore(snapshot.resent);
    this.watermark.restore(snapshot.watermark);
    this.lastWatermark = snapshot.watermark.combined;
    const fresh: string[] = [];
    for (const [name, running] of this.running) {
      const saved = snapshot.operators[name];
      if (saved && saved.ruleHash === running.hash) running.operator.restore(saved.snapshot);
      else {
        fresh.push(name);
        if (this.lastWatermark !== null) running.operator.onWatermark(this.lastWatermark);
      }
    }
    return fresh;
  }
}

/** JSON with sorted keys, so the same rule always hashes the same. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${stableJson((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}
