/** Typed outcomes of the use cases, so the HTTP layer can map them to status codes without parsing messages. */

/** -> HTTP 404 */
export interface NotFoundError {
  kind: 'not_found';
  entity: 'customer' | 'product';
  id: string;
}

/** -> HTTP 400 */
export interface ValidationError {
  kind: 'validation';
  field: string;
  message: string;
}

export type UseCaseError = NotFoundError | ValidationError;

export type UseCaseResult<T, E extends UseCaseError = UseCaseError> = { ok: true; value: T } | { ok: false; error: E };

export function success<T>(value: T): { ok: true; value: T } {
  return { ok: true, value };
}

export function notFound(entity: NotFoundError['entity'], id: string): { ok: false; error: NotFoundError } {
  return { ok: false, error: { kind: 'not_found', entity, id } };
}

export function invalid(field: string, message: string): { ok: false; error: ValidationError } {
  return { ok: false, error: { kind: 'validation', field, message } };
}
