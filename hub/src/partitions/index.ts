export {
  KvLeaseManager,
  LEASE_DEFAULTS,
  leaseQuotas,
  planLeases,
  type LeaseHandlers,
  type LeaseManagerOptions,
  type LeasePlan,
  type LeasePlanInput,
  type LeaseStatus,
  type ReleaseReason,
} from './kv-lease-manager.js';
