import { randomFillSync } from "node:crypto";
import { isSpanContextValid, TraceFlags, type SpanContext } from "@opentelemetry/api";
import { createContextKey } from "@connectrpc/connect";
import type { Link } from "./pipeline.js";

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) with the
 * OpenTelemetry API's types and checks: every call gets a span context —
 * the caller's trace (from a valid `traceparent`) or a new one — named in
 * its log line, its task events, and, with a child span id, in what
 * dispatch sends to the agent. Nothing is exported: an OpenTelemetry SDK
 * and exporter are configuration of a deployment, not a dependency.
 */

/** version-traceid-parentid-flags; a later version may append fields after a dash. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The caller's span context, or undefined for a missing or invalid header (ignored, as the spec says). */
export function parseTraceparent(value: string | null | undefined): SpanContext | undefined {
  if (!value || value.length > 512) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  // ff is forbidden; version 00 has exactly four fields.
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  const context: SpanContext = { traceId, spanId, traceFlags: parseInt(flags, 16) & TraceFlags.SAMPLED, isRemote: true };
  return isSpanContextValid(context) ? context : undefined;
}

/** The `traceparent` header value (version 00) for a span context. */
export function formatTraceparent(context: SpanContext): string {
  return `00-${context.traceId}-${context.spanId}-0${context.traceFlags & TraceFlags.SAMPLED}`;
}

const ids = Buffer.alloc(24 * 64);
let idsAt = ids.length;

/** `bytes` random bytes as hex (never all zeros, which W3C forbids), from a pooled buffer. */
function randomHex(bytes: 8 | 16): string {
  for (;;) {
    if (idsAt + bytes > ids.length) {
      randomFillSync(ids);
      idsAt = 0;
    }
    const hex = ids.toString("hex", idsAt, (idsAt += bytes));
    if (!/^0+$/.test(hex)) return hex;
  }
}

export const newTraceId = (): string => randomHex(16);
export const newSpanId = (): string => randomHex(8);

/** A span of this trace with a new span id (what a call hands downstream as the parent). */
export function childOf(context: SpanContext): SpanContext {
  return { traceId: context.traceId, spanId: newSpanId(), traceFlags: context.traceFlags };
}

/** A call's own span: a child of the caller's span, or the root of a new trace. */
export function spanOf(parent: SpanContext | undefined): SpanContext {
  return parent
    ? { traceId: parent.traceId, spanId: newSpanId(), traceFlags: parent.traceFlags }
    : { traceId: newTraceId(), spanId: newSpanId(), traceFlags: TraceFlags.NONE };
}

/**
 * The call's span context in its HandlerContext values, set by each entry
 * point with the principal, for the handlers that carry it on (dispatch):
 * the call record itself, whose span ids are made only when read.
 * (Not AsyncLocalStorage: in Node 20 its first use turns on promise hooks
 * for the whole process, which cost the hot paths every promise.)
 */
export const traceKey = createContextKey<{ readonly trace: SpanContext | undefined } | undefined>(undefined, { description: "trace context" });

/**
 * The trace link: before anything else (so a refused call has its trace
 * too) it reads `traceparent` from the call's headers; the call's own span
 * (`call.trace`: the caller's trace id, or a new trace) is made from it
 * when something first asks — a log line, dispatch — since random ids on
 * every call are a cost most calls never use.
 */
export function traceLink(): Link {
  return {
    before(call, admission) {
      call.traceParent = parseTraceparent(admission.header.get("traceparent"));
      call.traced = true;
    },
  };
}
