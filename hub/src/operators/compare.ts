/** Numeric comparison shared by threshold conditions and window `having` filters. */
export type CompareOp = '>' | '>=' | '<' | '<=' | '==' | '!=';

export const COMPARE_OPS: readonly CompareOp[] = ['>', '>=', '<', '<=', '==', '!='];

export function compare(left: number, op: CompareOp, right: number): boolean {
  switch (op) {
    case '>':
      return left > right;
    case '>=':
      return left >= right;
    case '<':
      return left < right;
    case '<=':
      return left <= right;
    case '==':
      return left === right;
    case '!=':
      return left !== right;
  }
}

/** The value as a finite number, or undefined: strings are not parsed (the schemas already type the fields). */
export function finiteNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}
