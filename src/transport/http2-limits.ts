import type { IncomingHttpHeaders } from "node:http";
import type { Duplex } from "node:stream";
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { percentEncode } from "./grpc-message.js";
import { httpStatus } from "./rest/http-status.js";

const STATE = Symbol("session state");
const ON_CLOSE = Symbol("close listener");
type Tagged = http2.ServerHttp2Stream & { [STATE]?: SessionState; [ON_CLOSE]?: (this: http2.ServerHttp2Stream) => void };

/**
 * One HTTP/2 session's open streams and idle timer: a session without an
 * open stream for `idleMs` is closed with a GOAWAY. That also reclaims the
 * sockets node keeps after it sent a GOAWAY for a protocol error (an
 * invalid HPACK byte, the rapid-reset limit): it stops reading them and
 * never closes them, and no event says so; and after a GOAWAY node waits for
 * the peer to close its side, so the socket itself is destroyed a moment
 * later. One timer per session, refreshed rather than made again.
 */
export class SessionState {
  private open = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly session: http2.ServerHttp2Session,
    /** The socket under the session (node's `session.socket` forgets it once the session is destroyed). */
    private readonly socket: Duplex,
    idleMs: number,
  ) {
    this.timer = setTimeout(this.expire, idleMs).unref();
  }

  opened(stream: http2.ServerHttp2Stream): void {
    this.open++;
    (stream as Tagged)[STATE] = this;
    stream.on("close", onStreamClose);
  }

  closed(): void {
    if (--this.open === 0) this.timer.refresh();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private readonly expire = () => {
    if (this.socket.destroyed) return;
    if (this.open > 0 && !this.session.destroyed) {
      this.timer.refresh();
      return;
    }
    if (!this.session.destroyed) this.session.close();
    // A session in a broken state may never finish closing.
    // node then waits for the peer to close its side, which a client that
    // stopped reading never does: the socket itself goes after a moment.
    setTimeout(() => this.socket.destroy(), 1_000).unref();
  };
}

function onStreamClose(this: Tagged): void {
  this[STATE]?.closed();
  this[ON_CLOSE]?.call(this);
}

/**
 * Calls `listener` (`this`: the stream) when the stream closes. A stream
 * its session counts already has our one close listener, which calls it:
 * a second listener would make node keep (and copy on every emit) an array
 * of them. `listener` is shared by every stream (it holds nothing of one).
 */
export function onStreamClosed(stream: http2.ServerHttp2Stream, listener: (this: http2.ServerHttp2Stream) => void): void {
  const tagged = stream as Tagged;
  if (tagged[STATE] !== undefined && tagged[ON_CLOSE] === undefined) tagged[ON_CLOSE] = listener;
  else stream.on("close", listener);
}

/** A pending stream's slot in `PendingRequests` (none once its request is in). */
const SLOT = Symbol("pending slot");
type Pending = http2.ServerHttp2Stream & { [SLOT]?: number };

/**
 * HTTP/2 requests whose headers and body have not all arrived, swept a few
 * times per limit: one still receiving after `limitMs` is answered and
 * ended (`expire`). No timer per request: the lean gRPC path adds every
 * call here. A slot table rather than a Map: a long-lived Map churned by
 * short-lived keys keeps them all alive until the next full GC (V8 keeps a
 * rehashed-away table, entries and all, and the old one points at it), so
 * every stream would be copied and promoted by the young-generation GCs;
 * here a request's slot is cleared when it is in, and taken again later.
 */
export class PendingRequests {
  private readonly streams: (Pending | undefined)[] = [];
  private started = new Float64Array(64);
  private readonly free: number[] = [];
  private readonly sweeper: NodeJS.Timeout;
  /** A stream's "end" listener (`this` is the stream): its request is in. */
  readonly onRequestEnd: (this: http2.ServerHttp2Stream) => void;

  constructor(
    private readonly limitMs: number,
    private readonly expire: (stream: http2.ServerHttp2Stream) => void,
  ) {
    this.sweeper = setInterval(this.sweep, Math.max(50, Math.min(1_000, limitMs / 4))).unref();
    const pending = this;
    this.onRequestEnd = function (this: http2.ServerHttp2Stream) {
      pending.delete(this);
    };
  }

  add(stream: http2.ServerHttp2Stream): void {
    const s = stream as Pending;
    if (s[SLOT] !== undefined) return;
    const i = this.free.pop() ?? this.streams.length;
    if (i >= this.started.length) {
      const grown = new Float64Array(this.started.length * 2);
      grown.set(this.started);
      this.started = grown;
    }
    this.streams[i] = s;
    this.started[i] = performance.now();
    s[SLOT] = i;
  }

  delete(stream: http2.ServerHttp2Stream): void {
    const s = stream as Pending;
    const i = s[SLOT];
    if (i === undefined) return;
    s[SLOT] = undefined;
    this.streams[i] = undefined;
    this.free.push(i);
  }

  /** Requests still arriving (tests). */
  get size(): number {
    return this.streams.length - this.free.length;
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  private readonly sweep = () => {
    const tooOld = performance.now() - this.limitMs;
    for (let i = 0; i < this.streams.length; i++) {
      const stream = this.streams[i];
      if (stream === undefined) continue;
      if (stream.destroyed || stream.closed) this.delete(stream);
      else if (this.started[i]! <= tooOld) {
        this.delete(stream);
        this.expire(stream);
      }
    }
    // After a flood, the table goes back to its first size once empty.
    if (this.free.length === this.streams.length && this.streams.length > 1024) {
      this.streams.length = 0;
      this.free.length = 0;
      this.started = new Float64Array(64);
    }
  };
}

export function requestTooSlow(limitMs: number): ConnectError {
  return new ConnectError(`request not received within ${limitMs} ms (REQUEST_TIMEOUT)`, Code.DeadlineExceeded);
}

/**
 * Answers a stream the server will not serve, in its protocol (gRPC:
 * trailers-only; otherwise JSON with the HTTP status of the code, 408 for
 * a request that came too slowly), then asks the client to stop sending
 * (RST_STREAM NO_ERROR after a complete response, RFC 9113 §8.1).
 */
export function refuseStream(stream: http2.ServerHttp2Stream, err: ConnectError): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_CANCEL);
    return;
  }
  const ct = requestContentType(stream);
  if (ct.startsWith("application/grpc")) {
    stream.respond(
      { ":status": 200, "content-type": ct, "grpc-status": String(err.code), "grpc-message": percentEncode(err.rawMessage) },
      { endStream: true },
    );
  } else {
    const status = err.code === Code.DeadlineExceeded && err.rawMessage.includes("REQUEST_TIMEOUT") ? 408 : httpStatus(err.code);
    stream.respond({ ":status": status, "content-type": "application/json", connection: undefined });
    stream.end(JSON.stringify({ code: err.code, message: err.rawMessage, details: [] }));
  }
  stream.close(http2.constants.NGHTTP2_NO_ERROR);
}

/** The request's content type, kept on the stream by `rememberContentType`. */
const CONTENT_TYPE = Symbol("request content type");
export function rememberContentType(stream: http2.ServerHttp2Stream, headers: IncomingHttpHeaders): void {
  (stream as http2.ServerHttp2Stream & { [CONTENT_TYPE]?: string })[CONTENT_TYPE] = headers["content-type"];
}
function requestContentType(stream: http2.ServerHttp2Stream): string {
  return (stream as http2.ServerHttp2Stream & { [CONTENT_TYPE]?: string })[CONTENT_TYPE] ?? "";
}

const timeoutUnits: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000001 };

/** grpc-timeout: up to 8 digits and a unit (H, M, S, m, u, n), in whole milliseconds (at least 1). */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) return undefined;
  return Math.max(1, Math.ceil(Number(m[1]) * timeoutUnits[m[2]!]!));
}

/**
 * Clamps the deadline a request asks for (grpc-timeout, connect-timeout-ms)
 * to `maxMs` in its headers, before connect-node reads them: a timer longer
 * than node's 2^31-1 ms fires after 1 ms, so grpc-go's 30-day deadline
 * ended calls at once.
 */
export function clampDeadline(headers: IncomingHttpHeaders, maxMs: number): void {
  const grpc = headers["grpc-timeout"];
  if (grpc !== undefined) {
    const ms = parseGrpcTimeout(grpc);
    if (ms !== undefined && ms > maxMs) headers["grpc-timeout"] = maxMs <= 99_999_999 ? `${maxMs}m` : `${Math.floor(maxMs / 1_000)}S`;
  }
  const connect = headers["connect-timeout-ms"];
  if (typeof connect === "string" && /^\d{1,10}$/.test(connect) && Number(connect) > maxMs) headers["connect-timeout-ms"] = String(maxMs);
}
