export {
  DEFAULT_RULES_BUCKET,
  DEFAULT_RULES_DIR,
  DEFAULT_RULES_REPLICAS,
  KvRuleStore,
  canonicalJson,
  decodeRule,
  encodeRule,
  openRuleBucket,
  publishRuleFiles,
  publishRules,
  readRuleFiles,
  ruleKey,
  ruleNameOf,
} from './kv-rule-store.js';
export type { KvRuleStoreOptions, PublishOptions, PublishReport, RuleBucketOptions, RuleFileProblem, RuleFromFile } from './kv-rule-store.js';
