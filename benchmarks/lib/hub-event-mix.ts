/** The event mix of the hub benchmarks: 80% telemetry over 2,000 devices (some overheat), 20% app events over 5,000 users. */
import type { WireEvent } from '../../shared/wire.js';

export const MIX_DEVICES = 2000;
export const MIX_USERS = 5000;
const APP_KINDS = ['video_play', 'video_complete', 'failed_login', 'login_success', 'page_view'];

/** Event number `n` of the mix at event time `nowMs`; ids and keys start with `prefix`. */
export function mixEvent(n: number, nowMs: number, prefix: string): WireEvent {
  if (n % 5 !== 4) {
    const device = `${prefix}-d${n % MIX_DEVICES}`;
    const body = { event_id: `${prefix}-${n}`, device_id: device, timestamp: nowMs, metric: 'temperature', value: 20 + ((n * 7) % 70) };
    return { id: body.event_id, type: 'device.telemetry', sv: 1, key: device, ts: nowMs * 1000, its: nowMs * 1000, src: 'bench', body };
  }
  const user = `${prefix}-u${n % MIX_USERS}`;
  const body = { event_id: `${prefix}-${n}`, event_type: APP_KINDS[n % APP_KINDS.length]!, user_id: user, timestamp: nowMs, context: { device_type: 'tv' } };
  return { id: body.event_id, type: 'app.event', sv: 1, key: user, ts: nowMs * 1000, its: nowMs * 1000, src: 'bench', body };
}
