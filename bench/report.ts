/** One measured figure, with the peer it is compared with in the same run. */
export interface BenchResult {
  case: string;
  value: number;
  unit: string;
  peer: string;
  peerValue: number;
  /** value / peerValue (for rates, higher is better; for latencies the case says so). */
  ratio: number;
}

/** Cases measured together (they share a setup or a peer); `names` are what `--only` matches, as prefixes of the
 * results' case names. */
export interface CaseGroup {
  names: readonly string[];
  run(): Promise<BenchResult[]>;
}

export function result(
  name: string,
  value: number,
  unit: string,
  peer: string,
  peerValue: number,
): BenchResult {
  return { case: name, value, unit, peer, peerValue, ratio: peerValue === 0 ? 0 : value / peerValue };
}

/** Prints results as an aligned table, or as JSON with `--json`. */
export function report(results: readonly BenchResult[], json: boolean): void {
  if (json) {
    console.log(JSON.stringify(results, null, 2));
    return;
  }
  const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));
  const rows = [
    ['case', 'value', 'unit', 'peer', 'peer value', 'ratio'],
    ...results.map((r) => [r.case, fmt(r.value), r.unit, r.peer, fmt(r.peerValue), `${r.ratio.toFixed(2)}x`]),
  ];
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
  for (const row of rows) {
    console.log(
      row
        .map((cell, col) =>
          col === 0 || col === 3 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!),
        )
        .join('  '),
    );
  }
}

/** The median of `runs` measurements of `measure`. */
export async function median(runs: number, measure: () => Promise<number>): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < runs; i++) values.push(await measure());
  values.sort((a, b) => a - b);
  return values[Math.floor(values.length / 2)]!;
}
