import type { DescMethod } from "@bufbuild/protobuf";
import type { SpanContext } from "@opentelemetry/api";
import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "../logger.js";
import { peerKey, principalKey, type Principal } from "../security/principal.js";
import type { GuardedCall, RequestGuard } from "../security/request-guard.js";
import { httpStatus } from "./rest/http-status.js";
import { spanOf, traceKey } from "./trace-context.js";

/** How a call reached us. */
export type Protocol = "grpc" | "grpc-web" | "connect" | "rest" | "ws" | "http";

/**
 * One call from its first byte to its end, then its outcome record: the
 * only object the pipeline makes per call. Entry points fill in what they
 * learn (method, bytes); the links read it.
 */
export class Call {
  /** "federation.v1.RegistryService/Register", a route's name ("/ws"), or "" when nothing matched. */
  method = "";
  principal: Principal | undefined = undefined;
  /** The outcome as a gRPC/Connect code (0 = OK) whatever the protocol: what metrics and SLOs count. -1 until known. */
  code = -1;
  /** The outcome in the protocol's own terms: a gRPC code (grpc, grpc-web), a Connect code name (connect), an HTTP status (rest, ws, http). */
  status: number | string = 0;
  /** The HTTP status the response had, where the protocol has one. */
  httpStatus = 0;
  bytesIn = 0;
  bytesOut = 0;
  durationMs = 0;
  /** The caller's span from a valid `traceparent`, read by the trace link. */
  traceParent: SpanContext | undefined = undefined;
  /** Set by the trace link: this call has a span (its ids are made when first read; most calls never read them). */
  traced = false;
  private span: SpanContext | undefined = undefined;
  ended = false;
  readonly startedAt = performance.now();

  constructor(
    readonly requestId: string,
    public protocol: Protocol,
    /** The request path (for logs; metrics use `method`, whose values are bounded). */
    readonly path: string,
  ) {}

  get tenant(): string {
    return this.principal?.tenant ?? "";
  }

  /** This call's span (W3C trace context: the caller's trace id or a new one); undefined without the trace link. */
  get trace(): SpanContext | undefined {
    if (!this.traced) return undefined;
    return (this.span ??= spanOf(this.traceParent));
  }
}

/** What the guard needs to know about a call before its handler runs. */
export type Admission = GuardedCall;

/**
 * A concern every call needs, as one link of the chain. `before` runs in
 * chain order before the handler (throw a ConnectError to refuse the
 * call); `after` runs once when the call has ended, with its outcome.
 */
export interface Link {
  readonly before?: (call: Call, admission: Admission) => void | Promise<void>;
  readonly after?: (call: Call) => void;
}

/**
 * The one call pipeline every entry point runs — the lean gRPC path,
 * connect-node (gRPC, gRPC-Web, Connect), REST, /ws and the other HTTP
 * routes: request id (`begin`) → the links' `before` (authentication,
 * access policy and quota: the guard) → the handler → one outcome record
 * (`finish`) handed to the links' `after` (the request log line; metrics
 * join here). Adding a concern is adding a link.
 */
export class Pipeline {
  private readonly befores: NonNullable<Link["before"]>[];
  private readonly afters: NonNullable<Link["after"]>[];

  constructor(links: readonly Link[]) {
    this.befores = links.flatMap((l) => (l.before ? [l.before] : []));
    this.afters = links.flatMap((l) => (l.after ? [l.after] : []));
  }

  begin(requestId: string, protocol: Protocol, path: string): Call {
    return new Call(requestId, protocol, path);
  }

  /**
   * Runs every `before` link in order; the guard leaves the principal on
   * the call. Synchronous while the links are (a promise only from the
   * first link that needs one), since every call on every protocol runs it.
   */
  admit(call: Call, admission: Admission): void | Promise<void> {
    if (call.method === "") call.method = `${admission.service}/${admission.method}`;
    return this.runBefores(call, admission, 0);
  }

  private runBefores(call: Call, admission: Admission, from: number): void | Promise<void> {
    for (let i = from; i < this.befores.length; i++) {
      const pending = this.befores[i]!(call, admission);
      if (pending) return pending.then(() => this.runBefores(call, admission, i + 1));
    }
  }

  /**
   * Ends the call with its outcome (a code, and the HTTP status where the
   * protocol has one) and hands the record to every `after` link. Only the
   * first finish counts.
   */
  finish(call: Call, code: number, httpStatus = 0): void {
    if (call.ended) return;
    call.ended = true;
    call.code = code;
    call.httpStatus = httpStatus;
    call.durationMs = performance.now() - call.startedAt;
    call.status = statusOf(call.protocol, code, httpStatus);
    for (const after of this.afters) after(call);
  }

  /**
   * The pipeline for connect-node's calls: the `before` links, with the
   * principal left in the context for the handlers, and the outcome the
   * handler reached (the entry point finishes the call when the response
   * is done, since errors can also happen outside any interceptor).
   */
  interceptor(callOf: (values: ContextValues) => Call | undefined): Interceptor {
    return (next) => async (req) => {
      const call = callOf(req.contextValues);
      if (!call) throw new ConnectError("call outside the pipeline", Code.Internal);
      call.method = procedureOf(req.method);
      try {
        await this.admit(call, {
          service: req.service.typeName,
          method: req.method.name,
          header: req.header,
          peer: req.contextValues.get(peerKey),
          message: req.stream ? undefined : req.message,
        });
        if (call.principal) req.contextValues.set(principalKey, call.principal);
        req.contextValues.set(traceKey, call);
        // connect-node aborts the signal at the deadline but still sends a
        // unary answer that comes later; the lean path answers
        // DEADLINE_EXCEEDED on time, and so does this.
        const res = req.stream ? await next(req) : await untilAborted(next(req), req.signal);
        if (!res.stream) {
          call.code = 0;
          return res;
        }
        return { ...res, message: observeEnd(res.message, call) };
      } catch (err) {
        call.code = ConnectError.from(err).code;
        throw err;
      }
    };
  }
}

/** `work`, or the signal's reason if it aborts first. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    // The handler has started: its own outcome no longer matters, but it must not go unhandled.
    work.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([work, aborted]).finally(() => signal.removeEventListener("abort", onAbort!));
}

const procedures = new WeakMap<DescMethod, string>();

/** "package.Service/Method", made once per method. */
function procedureOf(method: DescMethod): string {
  let name = procedures.get(method);
  if (name === undefined) procedures.set(method, (name = `${method.parent.typeName}/${method.name}`));
  return name;
}

/** Passes a response stream through, noting how it ended. */
async function* observeEnd<T>(source: AsyncIterable<T>, call: Call): AsyncGenerator<T> {
  try {
    yield* source;
    call.code = 0;
  } catch (err) {
    call.code = ConnectError.from(err).code;
    throw err;
  }
}

function statusOf(protocol: Protocol, code: number, http: number): number | string {
  switch (protocol) {
    case "grpc":
    case "grpc-web":
      return code;
    case "connect":
      return code === 0 ? "ok" : codeToString(code as Code);
    default:
      return http || (code === 0 ? 200 : httpStatus(code as Code));
  }
}

/** The guard as a link: who is calling, may they, and is their tenant within its quota. */
export function guardLink(guard: RequestGuard): Link {
  return {
    before(call, admission) {
      const principal = guard.admit(admission);
      if (!(principal instanceof Promise)) {
        call.principal = principal;
        return;
      }
      return principal.then((p) => {
        call.principal = p;
      });
    },
  };
}

/** One pino line per call, with its outcome (never a credential: only ids, names and numbers). */
export function logLink(log: Logger): Link {
  return {
    after(call) {
      if (!log.isLevelEnabled("info")) return;
      log.info(
        {
          reqId: call.requestId,
          traceId: call.trace?.traceId,
          protocol: call.protocol,
          method: call.method || undefined,
          path: call.path,
          tenant: call.tenant || undefined,
          status: call.status,
          ms: +call.durationMs.toFixed(2),
          bytesIn: call.bytesIn,
          bytesOut: call.bytesOut,
        },
        "request",
      );
    },
  };
}
