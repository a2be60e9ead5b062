import { toJson, type DescEnum, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

/**
 * Where fedctl writes. Results go to stdout (a table, or JSON with --json);
 * progress, notices and errors to stderr, so `fedctl ... --json | jq` and
 * `TOKEN=$(fedctl token ...)` see only the result.
 */
export interface Output {
  readonly json: boolean;
  /** Colour on stdout: a TTY, NO_COLOR unset (FORCE_COLOR forces it). */
  readonly color: boolean;
  /** stderr is a terminal: show progress counters. */
  readonly progress: boolean;
  line(text?: string): void;
  notice(text: string): void;
}

export function createOutput(json: boolean): Output {
  const force = process.env.FORCE_COLOR;
  const color =
    force !== undefined && force !== "0" ? true : process.stdout.isTTY === true && !("NO_COLOR" in process.env);
  return {
    json,
    color,
    progress: process.stderr.isTTY === true,
    line: (text = "") => void process.stdout.write(`${text}\n`),
    notice: (text) => void process.stderr.write(`${text}\n`),
  };
}

/** A message as proto3 JSON (enum names, RFC 3339 times), the form the REST API answers. */
export function messageJson<D extends DescMessage>(schema: D, message: MessageShape<D>): unknown {
  return toJson(schema, message);
}

export function printJson(out: Output, value: unknown, compact = false): void {
  out.line(compact ? JSON.stringify(value) : JSON.stringify(value, null, 2));
}

/**
 * Columns padded to their widest cell; the last column is never padded.
 * `decorate` colours a padded cell (after layout, so escape codes do not
 * count toward widths).
 */
export function table(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  decorate?: (row: number, column: number, padded: string) => string,
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const render = (cells: readonly string[], row: number) =>
    cells
      .map((c, i) => {
        const padded = i === cells.length - 1 ? c : c.padEnd(widths[i]!);
        return row >= 0 && decorate ? decorate(row, i, padded) : padded;
      })
      .join("  ")
      .trimEnd();
  return [render(headers, -1), ...rows.map(render)].join("\n");
}

/** AGENT_STATUS_HEALTHY → "healthy". */
export function enumLabel(desc: DescEnum, value: number, prefix: string): string {
  const name = desc.values.find((v) => v.number === value)?.name;
  if (!name || value === 0) return "-";
  return name.slice(prefix.length).toLowerCase();
}

export function timeLabel(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString().replace(/\.\d{3}Z$/, "Z") : "-";
}

export function durationLabel(d: Duration | undefined): string {
  if (!d) return "-";
  const ms = Number(d.seconds) * 1000 + d.nanos / 1e6;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 120) return `${Number(s.toFixed(1))}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

export function numberLabel(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

const ansi = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, gray: 90, bold: 1 } as const;
export type Colour = keyof typeof ansi;

export function paint(out: Output, colour: Colour | undefined, text: string): string {
  return out.color && colour ? `\x1b[${ansi[colour]}m${text}\x1b[0m` : text;
}

/**
 * A counter on stderr ("registering 12/100"), redrawn in place; only when
 * stderr is a terminal, so logs and CI output stay clean.
 */
export class Progress {
  private shown = false;
  private drawnAt = 0;
  constructor(
    private readonly out: Output,
    private readonly label: string,
    /** Unknown (paged reads): the count alone is shown. */
    private readonly total?: number,
  ) {}

  update(done: number): void {
    if (!this.out.progress || (this.total !== undefined && this.total < 2)) return;
    // At most ~20 redraws a second: a terminal is slower than a fast loopback server.
    const now = Date.now();
    if (now - this.drawnAt < 50 && done !== this.total) return;
    this.drawnAt = now;
    process.stderr.write(`\r${this.label} ${done}${this.total === undefined ? "" : `/${this.total}`}`);
    this.shown = true;
  }

  /** Clears the counter's line (before anything else is printed). */
  clear(): void {
    if (!this.shown) return;
    process.stderr.write("\r\x1b[2K");
    this.shown = false;
  }
}
