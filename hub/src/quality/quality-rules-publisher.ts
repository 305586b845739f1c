/**
 * Keeps the rules bucket in step with the quality files beside the schemas: reads them at start and every
 * `reloadIntervalMs`, and when their content changed publishes the compiled rules (publishRules: a rule edited in
 * KV since is kept). Every hub watches the bucket, so an edited quality.json takes effect everywhere without a
 * restart. A file that does not validate is logged with the field at fault and changes nothing: the rules it
 * compiled to last stay as they are.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../../../shared/logger.js';
import { errorMessage } from '../errors.js';
import { publishRules, type PublishReport, type RuleBucketOptions } from '../rules/index.js';
import { readQualityRules, type QualityAlertThresholds, type QualityRuleSet } from './quality-rules.js';

export interface QualityRulesPublisherOptions extends RuleBucketOptions {
  schemasDir: string;
  reloadIntervalMs: number;
  log: Logger;
}

export class QualityRulesPublisher {
  private timer: NodeJS.Timeout | undefined;
  private published = '';
  private reported = '';
  private current: QualityRuleSet | undefined;
  private publishing: Promise<void> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: QualityRulesPublisherOptions,
  ) {}

  /** Publishes the files once (throws when the bucket cannot be written), then checks them every interval. */
  async start(): Promise<PublishReport | undefined> {
    const report = await this.publishIfChanged();
    if (this.options.reloadIntervalMs > 0) {
      this.timer = setInterval(() => {
        this.publishing ??= this.publishIfChanged()
          .then(() => undefined)
          .catch((error: unknown) => this.options.log.warn({ err: errorMessage(error) }, 'quality rules not published; retrying'))
          .finally(() => {
            this.publishing = undefined;
          });
      }, this.options.reloadIntervalMs);
      this.timer.unref();
    }
    return report;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.publishing;
  }

  /** Alert thresholds per event type, as the files declared them last (a refused file keeps its earlier ones). */
  alertThresholds(): Map<string, QualityAlertThresholds> {
    return this.current?.alerts ?? new Map();
  }

  private async publishIfChanged(): Promise<PublishReport | undefined> {
    const set = readQualityRules(this.options.schemasDir);
    if (set.fingerprint === this.published) return undefined;
    const { log } = this.options;
    if (set.fingerprint !== this.reported) {
      for (const problem of set.problems) log.error({ file: problem.file, err: problem.error }, 'quality rules refused; the ones published before stay');
      this.reported = set.fingerprint;
    }
    const report = await publishRules(this.nc, set.rules, set.problems, { bucket: this.options.bucket, replicas: this.options.replicas });
    this.published = set.fingerprint;
    // Thresholds of a refused file stay as they were.
    const alerts = new Map(this.current?.alerts ?? []);
    for (const [type, thresholds] of set.alerts) alerts.set(type, thresholds);
    this.current = { ...set, alerts };
    log.info(
      { rules: set.rules.map((r) => r.rule.name), created: report.created, updated: report.updated, kept: report.kept.map((k) => k.name), refused: set.problems.map((p) => p.file) },
      'quality rules published',
    );
    return report;
  }
}
