/**
 * Delivers alerts from the ALERTS stream (CEP rules and pipeline alerts alike) to a webhook: one durable JetStream
 * consumer per webhook (`webhook-<name>`), shared by every hub process, so each alert is posted by one of them.
 *
 *   POST <url>   content-type: application/json   idempotency-key: <the alert's message id: rule:key:ts>
 *   body         the alert: { type, rule, key, severity, ts, message, details }
 *
 * A 2xx answer acks it. A 5xx, 408, 429, a timeout or a refused connection is retried: the message is nak'ed with the
 * next delay of `backoffMs` and comes back later (JetStream keeps it; a hub restart loses nothing), up to
 * `maxDeliver` attempts, after which it is given up and logged. Any other 4xx is the receiver refusing this alert: it
 * is logged and not retried. Delivery is at least once (a 2xx whose ack was lost is posted again), so the receiver
 * dedups on `idempotency-key`; the stream itself never holds an alert twice (duplicate window on the message id).
 * Which alerts: `minSeverity` and, if given, rule name prefixes (`rules`). A new webhook starts with the alerts raised
 * after it was first configured, not the stream's history.
 */
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { ALERTS_STREAM } from '../../../shared/wire.js';
import { errorMessage } from '../errors.js';
import type { Alert, Severity } from '../operators/operator.js';

export interface WebhookConfig {
  name: string;
  url: string;
  minSeverity: Severity;
  /** Rule name prefixes to deliver (e.g. `pipeline.`, `overheating`); empty: all. */
  rules: string[];
  /** Extra request headers (e.g. an authorization token). */
  headers: Record<string, string>;
  timeoutMs: number;
  maxDeliver: number;
  /** Delays between attempts; the last repeats. */
  backoffMs: number[];
}

const SEVERITY_ORDER: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

export function wantsAlert(config: Pick<WebhookConfig, 'minSeverity' | 'rules'>, alert: Pick<Alert, 'rule' | 'severity'>): boolean {
  if ((SEVERITY_ORDER[alert.severity] ?? 0) < SEVERITY_ORDER[config.minSeverity]) return false;
  return config.rules.length === 0 || config.rules.some((prefix) => alert.rule.startsWith(prefix));
}

/** What to do with an HTTP answer (status) or a failure to get one (undefined). */
export function deliveryOutcome(status: number | undefined): 'delivered' | 'retry' | 'refused' {
  if (status === undefined || status >= 500 || status === 408 || status === 429) return 'retry';
  if (status >= 200 && status < 300) return 'delivered';
  return 'refused';
}

export class WebhookNotifier {
  private stopped = false;
  private messages: { stop(): void; close(): Promise<void | Error> } | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly config: WebhookConfig,
    private readonly log: Logger,
  ) {}

  get consumerName(): string {
    return `webhook-${this.config.name}`;
  }

  async start(): Promise<void> {
    const existing = await this.jsm.consumers.info(ALERTS_STREAM, this.consumerName).catch(() => undefined);
    const settings = {
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(this.config.timeoutMs + 10_000),
      max_deliver: this.config.maxDeliver,
      max_ack_pending: 100,
    };
    if (existing) await this.jsm.consumers.update(ALERTS_STREAM, this.consumerName, settings);
    else await this.jsm.consumers.add(ALERTS_STREAM, { durable_name: this.consumerName, deliver_policy: DeliverPolicy.New, ...settings });
    const consumer = await this.js.consumers.get(ALERTS_STREAM, this.consumerName);
    const messages = await consumer.consume({ max_messages: 20 });
    this.messages = messages;
    this.loop = (async () => {
      for await (const message of messages) {
        if (this.stopped) break;
        await this.handle(message);
      }
    })().catch((error: unknown) => this.log.error({ webhook: this.config.name, err: errorMessage(error) }, 'webhook delivery stopped'));
    this.log.info({ webhook: this.config.name, consumer: this.consumerName }, 'webhook delivering alerts');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.messages?.stop();
    await this.loop;
  }

  private async handle(message: JsMsg): Promise<void> {
    let alert: Alert;
    try {
      alert = JSON.parse(message.string()) as Alert;
    } catch {
      message.term('not an alert');
      return;
    }
    if (!wantsAlert(this.config, alert)) {
      message.ack();
      return;
    }
    const id = message.headers?.get('Nats-Msg-Id') || `${alert.rule}:${alert.key}:${alert.ts}`;
    let status: number | undefined;
    let failure = '';
    try {
      const response = await fetch(this.config.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': id, ...this.config.headers },
        body: JSON.stringify(alert),
        signal: AbortSignal.timeout(this.config.timeoutMs),
      });
      status = response.status;
      await response.arrayBuffer().catch(() => undefined);
    } catch (error) {
      failure = errorMessage(error);
    }
    const attempt = message.info.deliveryCount;
    const context = { webhook: this.config.name, alert: id, attempt, status, ...(failure ? { err: failure } : {}) };
    switch (deliveryOutcome(status)) {
      case 'delivered':
        message.ack();
        return;
      case 'refused':
        this.log.warn(context, 'webhook refused the alert; not retried');
        message.term(`webhook answered ${status}`);
        return;
      case 'retry': {
        if (attempt >= this.config.maxDeliver) {
          this.log.error(context, `webhook did not take the alert in ${attempt} attempts; given up`);
          message.term('max deliveries');
          return;
        }
        const delay = this.config.backoffMs[Math.min(attempt - 1, this.config.backoffMs.length - 1)] ?? 1000;
        this.log.warn({ ...context, retryInMs: delay }, 'webhook delivery failed; will retry');
        message.nak(delay);
      }
    }
  }
}
