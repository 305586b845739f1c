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
export async function rowsPerEventId(httpUrl: string, table: string, agentId: string): Promise<Map<string, number>> {
  const rows = await query<{ event_id: string; n: number }>(
    httpUrl,
    `select event_id, count() n from ${table} where agent_id = '${agentId}' group by event_id`,
  );
  return new Map(rows.map((r) => [r.event_id, Number(r.n)]));
}
