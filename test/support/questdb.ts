import assert from 'node:assert/strict';
/** SQL over QuestDB's REST endpoint, for assertions. */
export async function query<T extends Record<string, unknown>>(httpUrl: string, sql: string, headers: Record<string, string> = {}): Promise<T[]> {
  const response = await fetch(`${httpUrl}/exec?query=${encodeURIComponent(sql)}`, { headers });
  const body = (await response.json()) as { columns?: { name: string }[]; dataset?: unknown[][]; error?: string };
  if (!response.ok || body.error) throw new Error(`QuestDB query failed: ${body.error ?? response.status}: ${sql}`);
  const columns = (body.columns ?? []).map((c) => c.name);
  return (body.dataset ?? []).map((row) => Object.fromEntries(row.map((v, i) => [columns[i], v])) as T);
}

/** Polls `read` until `done` holds or the timeout passes; returns the last value either way. */
export async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read().catch(() => undefined as T);
  while (!done(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, intervalMs));
    value = await read().catch(() => value);
  }
  return value;
}

/** Event ids in `table` written by `agentId`, with how many rows each has. */
export async function rowsPerEventId(httpUrl: string, table: string, agentId: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const rows = await query<{ event_id: string; n: number }>(
    httpUrl,
    `select event_id, count() n from ${table} where agent_id = '${agentId}' group by event_id`,
    headers,
  );
  return new Map(rows.map((r) => [r.event_id, Number(r.n)]));
}

/**
 * Every id in `ids` is in QuestDB (device_telemetry or app_events, rows of `agentId`) exactly once; ids not in it may
 * or may not be there (sent but not acknowledged). Waits up to 90 s for the last ones to arrive. `headers`: QuestDB auth.
 */
export async function assertExactlyOnce(httpUrl: string, agentId: string, ids: ReadonlySet<string>, headers: Record<string, string> = {}): Promise<void> {
  const read = async () => {
    const [telemetry, app] = await Promise.all([rowsPerEventId(httpUrl, 'device_telemetry', agentId, headers), rowsPerEventId(httpUrl, 'app_events', agentId, headers)]);
    return new Map([...telemetry, ...app]);
  };
  const rows = await waitFor(read, (r) => [...ids].every((id) => r.has(id)), 90_000, 500);
  const missing = [...ids].filter((id) => !rows.has(id));
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${ids.size} acknowledged events are missing from QuestDB`);
  const doubled = [...rows].filter(([, n]) => n !== 1);
  assert.deepEqual(doubled.slice(0, 10), [], `${doubled.length} events are stored more than once`);
}
