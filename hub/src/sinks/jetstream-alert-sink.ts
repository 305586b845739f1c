/**
 * Publishes CEP alerts to the ALERTS stream (`alerts.<rule>`, JSON) for whoever reacts to them: webhooks, pagers,
 * the dashboard. The message id is the alert's identity (rule, key, event time), so an alert re-emitted by a replay
 * after a crash is dropped by JetStream's duplicate window, as its QuestDB row is by the dedup keys.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { ALERTS_STREAM } from '../../../shared/wire.js';
import { HubError, HubErrorCode, errorMessage } from '../errors.js';
import type { Alert } from '../operators/index.js';

export function alertSubject(rule: string): string {
  // Rule names may hold dots, which would add subject tokens.
  return `alerts.${rule.replace(/\./g, '_')}`;
}

export function alertMessageId(alert: Pick<Alert, 'rule' | 'key' | 'ts'>): string {
  return `${alert.rule}:${alert.key}:${alert.ts}`;
}

export class JetStreamAlertSink {
  published = 0;

  constructor(
    private readonly js: Pick<JetStreamClient, 'publish'>,
    private readonly publishTimeoutMs: number,
  ) {}

  /** Resolves when the stream confirmed every alert; throws otherwise (the caller retries, nothing is acked). */
  async publish(alerts: readonly Alert[]): Promise<void> {
    const results = await Promise.allSettled(
      alerts.map((alert) =>
        this.js.publish(alertSubject(alert.rule), JSON.stringify(alert), {
          msgID: alertMessageId(alert),
          expect: { streamName: ALERTS_STREAM },
          timeout: this.publishTimeoutMs,
        }),
      ),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    this.published += results.length - failed.length;
    if (failed.length > 0) {
      throw new HubError(
        HubErrorCode.DEAD_LETTER_FAILED,
        `${failed.length} of ${alerts.length} alerts not confirmed by the ${ALERTS_STREAM} stream: ${errorMessage(failed[0]!.reason)}`,
        { cause: failed[0]!.reason },
      );
    }
  }
}
