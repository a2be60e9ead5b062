import type { DescEnum, JsonObject } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "commander";
import { readFileSync } from "node:fs";

const unitsMs: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "15m", "24h", "7d", "250ms" or bare seconds → milliseconds (commander argParser). */
export function parseDurationMs(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`"${value}" is not a duration (e.g. 30s, 15m, 24h, 7d)`);
  const ms = Number(m[1]) * unitsMs[m[2] ?? "s"]!;
  if (!(ms > 0)) throw new InvalidArgumentError("must be more than zero");
  return ms;
}

/** Milliseconds → a proto3 JSON Duration ("1.5s"). */
export function durationJson(ms: number): string {
  return `${ms / 1000}s`;
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`"${value}" is not a positive whole number`);
  return n;
}

/** Collects a repeatable option; each use may also be a comma-separated list. */
export function collect(value: string, previous: string[] = []): string[] {
  return previous.concat(value.split(",").map((s) => s.trim()).filter((s) => s !== ""));
}

/**
 * An enum value from its short name, as a user types it: "healthy" for
 * AGENT_STATUS_HEALTHY, "round-robin" for ROUTE_STRATEGY_ROUND_ROBIN.
 */
export function enumParser<E extends DescEnum>(desc: E, prefix: string): (value: string) => number {
  const names = desc.values.filter((v) => v.number !== 0).map((v) => v.name.slice(prefix.length).toLowerCase());
  return (value) => {
    const wanted = value.trim().toUpperCase().replace(/-/g, "_");
    const found = desc.values.find((v) => v.number !== 0 && (v.name === wanted || v.name === prefix + wanted));
    if (!found) throw new InvalidArgumentError(`"${value}" is not one of ${names.join(", ")}`);
    return found.number;
  };
}

/** A task as inline JSON, or @file.json; must be a JSON object (a google.protobuf.Struct). */
export function parseTask(value: string): JsonObject {
  let text = value;
  if (value.startsWith("@")) {
    try {
      text = readFileSync(value.slice(1), "utf8");
    } catch (err) {
      throw new InvalidArgumentError(`cannot read ${value.slice(1)}: ${(err as Error).message}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`not JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new InvalidArgumentError("must be a JSON object");
  }
  return parsed as JsonObject;
}
