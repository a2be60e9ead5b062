import type { IncomingHttpHeaders } from "node:http";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";

/** Abort reasons of a call that ended normally, lost its client, or ran out of time. */
export const FINISHED = new ConnectError("call finished", Code.Canceled);
export const CLIENT_GONE = new ConnectError("client cancelled the call", Code.Canceled);
export const DEADLINE = new ConnectError("the call's deadline passed", Code.DeadlineExceeded);

export interface CallInit {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly protocolName: string;
  readonly requestMethod: string;
  readonly url: string;
  /** The request headers as node parsed them (HTTP/1.1 or HTTP/2). */
  readonly headers: IncomingHttpHeaders;
  readonly timeoutMs: number | undefined;
  readonly shutdown: AbortSignal;
  readonly values: ContextValues;
  readonly requestId: string;
}

/**
 * The HandlerContext of one call on our own paths (the lean gRPC path and
 * the REST transcoder). Service implementations get the interface
 * connect-node gives them, but the AbortSignal and the Headers objects are
 * only made if something reads them: a Discover needs neither, and making
 * them (connect's createHandlerContext: three AbortControllers, a
 * DOMException, three Headers) was a tenth of its CPU.
 */
export class CallContext implements HandlerContext {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly protocolName: string;
  readonly requestMethod: string;
  readonly url: string;
  readonly values: ContextValues;
  readonly requestId: string;
  /** Request headers read by name, without building a Headers object (this context's own `get`). */
  readonly rawHeader: Pick<Headers, "get">;
  /** Set when the call is answered, cancelled or past its deadline. */
  finished = false;
  onDeadline: (() => void) | undefined;
  private controller: AbortController | undefined;
  private reason: unknown;
  private requestHeaders: Headers | undefined;
  private responseHeaders: Headers | undefined;
  private responseTrailers: Headers | undefined;
  private readonly raw: IncomingHttpHeaders;
  private readonly shutdown: AbortSignal;
  private readonly deadlineAt: number | undefined;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(init: CallInit) {
    this.service = init.service;
    this.method = init.method;
    this.protocolName = init.protocolName;
    this.requestMethod = init.requestMethod;
    this.url = init.url;
    this.values = init.values;
    this.requestId = init.requestId;
    this.raw = init.headers;
    this.shutdown = init.shutdown;
    this.rawHeader = this;
    if (init.timeoutMs !== undefined) {
      this.deadlineAt = Date.now() + init.timeoutMs;
      this.timer = setTimeout(() => {
        this.onDeadline?.();
        this.abort(DEADLINE);
      }, init.timeoutMs);
    }
  }

  /** A request header by name, as a Headers object would give it (`rawHeader`). */
  get(name: string): string | null {
    return headerValue(this.raw, name);
  }

  timeoutMs(): number | undefined {
    return this.deadlineAt === undefined ? undefined : this.deadlineAt - Date.now();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.finished) this.controller.abort(this.reason);
      else this.shutdown.addEventListener("abort", this.onShutdown, { once: true });
    }
    return this.controller.signal;
  }

  get requestHeader(): Headers {
    return (this.requestHeaders ??= headersOf(this.raw));
  }

  get responseHeader(): Headers {
    return (this.responseHeaders ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.responseTrailers ??= new Headers());
  }

  /** The response headers and trailers, if a handler set any. */
  get touchedResponseHeader(): Headers | undefined {
    return this.responseHeaders;
  }

  get touchedResponseTrailer(): Headers | undefined {
    return this.responseTrailers;
  }

  abort(reason: unknown): void {
    if (this.finished) return;
    this.finished = true;
    this.reason = reason;
    if (this.timer) clearTimeout(this.timer);
    if (this.controller) {
      this.shutdown.removeEventListener("abort", this.onShutdown);
      this.controller.abort(reason);
    }
  }

  private readonly onShutdown = () => this.abort(this.shutdown.reason);
}

/**
 * connect's ContextValues as a class: connect's createContextValues() makes
 * three closures per call, and the lean path makes one of these per call.
 */
export class CallValues implements ContextValues {
  private readonly slots: Record<symbol, unknown> = {};

  get<T>(key: ContextKey<T>): T {
    return key.id in this.slots ? (this.slots[key.id] as T) : key.defaultValue;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    this.slots[key.id] = value;
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    delete this.slots[key.id];
    return this;
  }
}

/** One header as a Headers object would give it (repeated values joined). */
export function headerValue(h: IncomingHttpHeaders, name: string): string | null {
  const v = h[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

/** node's parsed headers as a Headers object (HTTP/2 pseudo-headers left out). */
export function headersOf(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const k in h) {
    if (k.charCodeAt(0) === 58 /* ":" */) continue;
    const v = h[k];
    if (typeof v === "string") out.set(k, v);
    else if (Array.isArray(v)) for (const x of v) out.append(k, x);
  }
  return out;
}
