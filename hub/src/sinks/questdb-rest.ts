/** QuestDB's REST API (`/exec` for SQL, `/ping` for liveness), used for DDL at start and health probes. */
import { HubError, HubErrorCode, errorMessage } from '../errors.js';

export interface QuestDbRestOptions {
  /** Base URL, e.g. `http://127.0.0.1:9000`. */
  httpUrl: string;
  username?: string | undefined;
  password?: string | undefined;
  timeoutMs: number;
}

export interface ExecResult {
  /** `OK` for DDL. */
  ddl?: string;
  columns?: Array<{ name: string; type: string }>;
  dataset?: unknown[][];
  count?: number;
}

export class QuestDbRest {
  private readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(private readonly options: QuestDbRestOptions) {
    this.base = options.httpUrl.replace(/\/+$/, '');
    this.headers =
      options.username !== undefined
        ? { authorization: `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}` }
        : {};
  }

  /** Runs one SQL statement; throws HUB_ERR_QUESTDB_REFUSED with QuestDB's error text, HUB_ERR_QUESTDB_UNAVAILABLE when unreachable. */
  async exec(sql: string): Promise<ExecResult> {
    const url = `${this.base}/exec?query=${encodeURIComponent(sql)}`;
    let response: Response;
    try {
      response = await fetch(url, { headers: this.headers, signal: AbortSignal.timeout(this.options.timeoutMs) });
    } catch (error) {
      throw new HubError(HubErrorCode.QUESTDB_UNAVAILABLE, `QuestDB at ${this.base} is not reachable: ${errorMessage(error)}`, { cause: error });
    }
    const text = await response.text();
    let body: ExecResult & { error?: string; position?: number };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      const code = response.status >= 500 ? HubErrorCode.QUESTDB_UNAVAILABLE : HubErrorCode.QUESTDB_REFUSED;
      throw new HubError(code, `QuestDB answered HTTP ${response.status} with a non-JSON body to: ${sql}: ${text.slice(0, 200)}`);
    }
    if (!response.ok || body.error !== undefined) {
      const at = body.position !== undefined ? ` (at position ${body.position})` : '';
      const code = response.status >= 500 ? HubErrorCode.QUESTDB_UNAVAILABLE : HubErrorCode.QUESTDB_REFUSED;
      throw new HubError(code, `QuestDB refused "${sql}"${at}: ${body.error ?? `HTTP ${response.status}`}`);
    }
    return body;
  }

  /** Resolves when QuestDB's HTTP server answers `/ping` with 204. */
  async ping(): Promise<void> {
    let response: Response;
    try {
      response = await fetch(`${this.base}/ping`, { headers: this.headers, signal: AbortSignal.timeout(this.options.timeoutMs) });
      await response.arrayBuffer();
    } catch (error) {
      throw new HubError(HubErrorCode.QUESTDB_UNAVAILABLE, `QuestDB at ${this.base} is not reachable: ${errorMessage(error)}`, { cause: error });
    }
    if (response.status !== 204) throw new HubError(HubErrorCode.QUESTDB_UNAVAILABLE, `QuestDB /ping answered HTTP ${response.status}`);
  }
}
