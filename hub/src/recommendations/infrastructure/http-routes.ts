/**
 * The serving API, on the hub's status port (GET only, answered from the read model in memory):
 *
 *   GET /v1/customers/{id}/recommendations?limit=10     ranked items, each with its score parts and reason
 *   GET /v1/customers/{id}/recommendations/{productId}/explanation
 *   GET /v1/customers/{id}/profile
 *   GET /v1/products/{id}/similar?limit=10
 *
 * Errors are JSON `{ error: { code, message, field? } }`: 400 for a bad id or limit (which field, why), 404 for an
 * unknown customer or product.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RecommendationsUseCases, UseCaseResult } from '../application/index.js';
import type { Recommendation } from '../domain/index.js';

/** Ids as the app events carry them: 1-128 characters, no control characters and no slash (they sit in a path). */
const ID = /^[^\u0000-\u001f\u007f/]{1,128}$/;
const DEFAULT_LIMIT = 10;

type Route = (response: ServerResponse, ids: string[], query: URLSearchParams) => Promise<void>;

function send(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

function sendResult<T>(response: ServerResponse, result: UseCaseResult<T>): void {
  if (result.ok) return send(response, 200, result.value);
  const error = result.error;
  if (error.kind === 'not_found') return send(response, 404, { error: { code: `unknown_${error.entity}`, message: `no ${error.entity} with id ${JSON.stringify(error.id)}` } });
  send(response, 400, { error: { code: 'invalid_request', field: error.field, message: error.message } });
}

function badRequest(response: ServerResponse, field: string, message: string): void {
  send(response, 400, { error: { code: 'invalid_request', field, message } });
}

/** The limit query parameter: absent gives the default; anything but a whole number is refused by the use case. */
function limitOf(query: URLSearchParams): number {
  const raw = query.get('limit');
  if (raw === null) return DEFAULT_LIMIT;
  return /^\d{1,6}$/.test(raw) ? Number(raw) : Number.NaN;
}

/** `recommend`: where lists come from (default: scored per request; the hub passes its RecommendationCache). */
export function recommendationsRoutes(
  useCases: RecommendationsUseCases,
  recommend: (customerId: string, limit: number) => Promise<UseCaseResult<Recommendation[]>> = (id, limit) => useCases.getRecommendations(id, limit),
): (request: IncomingMessage, response: ServerResponse, path: string) => boolean {
  const routes: Array<[RegExp, string[], Route]> = [
    [/^\/v1\/customers\/([^/]+)\/recommendations$/, ['customer id'], async (res, [id], q) => sendResult(res, await recommend(id!, limitOf(q)))],
    [
      /^\/v1\/customers\/([^/]+)\/recommendations\/([^/]+)\/explanation$/,
      ['customer id', 'product id'],
      async (res, [id, product]) => sendResult(res, await useCases.explainRecommendation(id!, product!)),
    ],
    [/^\/v1\/customers\/([^/]+)\/profile$/, ['customer id'], async (res, [id]) => sendResult(res, await useCases.getProfile(id!))],
    [/^\/v1\/products\/([^/]+)\/similar$/, ['product id'], async (res, [id], q) => sendResult(res, await useCases.similarProducts(id!, limitOf(q)))],
  ];
  return (request, response, path) => {
    if (!path.startsWith('/v1/')) return false;
    for (const [pattern, names, route] of routes) {
      const match = pattern.exec(path);
      if (!match) continue;
      const ids: string[] = [];
      for (const [i, name] of names.entries()) {
        let id: string;
        try {
          id = decodeURIComponent(match[i + 1]!);
        } catch {
          badRequest(response, name, `${name} is not valid percent-encoding`);
          return true;
        }
        if (!ID.test(id)) {
          badRequest(response, name, `${name} must be 1-128 characters without control characters or "/"`);
          return true;
        }
        ids.push(id);
      }
      const query = new URL(request.url ?? '/', 'http://localhost').searchParams;
      route(response, ids, query).catch((error: unknown) => send(response, 500, { error: { code: 'internal', message: String(error) } }));
      return true;
    }
    send(response, 404, { error: { code: 'no_such_route', message: `no API route ${path}: see /v1/customers/{id}/recommendations, /v1/customers/{id}/profile, /v1/products/{id}/similar` } });
    return true;
  };
}
