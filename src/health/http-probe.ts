import net from "node:net";
import tls from "node:tls";
import { DispatchRefused, type PinnedTarget } from "../dispatch/address-guard.js";
import { pinnedKey, sameAddress, sni } from "../dispatch/pinned-connection.js";

/** A probe that got no verdict within its time (outcome "timeout"). */
export class ProbeTimeout extends Error {
  override name = "TimeoutError";
}

/** The agent answered, but not with 2xx: the message says how. */
export class HttpProbeFailed extends Error {
  override name = "ProbeFailed";
}

/** A health answer's header block past this is an error (no agent needs more to say 200). */
const MAX_HEAD_BYTES = 16 * 1024;
/** A health body past this is cut (its status was the answer): the socket is closed, not drained. */
const MAX_BODY_BYTES = 64 * 1024;
/** Targets (scheme, name, checked address, port) with sockets kept at most; the oldest go first. */
const MAX_TARGETS = 10_000;

const CRLF2 = Buffer.from("\r\n\r\n");
const CONTENT_LENGTH = /\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*(?=\r\n)/i;
const CHUNKED = /\r\ntransfer-encoding[ \t]*:[^\r]*chunked/i;
const CLOSE = /\r\nconnection[ \t]*:[^\r]*close/i;
const KEEP_ALIVE = /\r\nconnection[ \t]*:[^\r]*keep-alive/i;

/** One probe in flight: its promise's ends, its deadline, the connection it is on. */
interface Pending {
  readonly target: PinnedTarget;
  readonly request: Buffer;
  readonly path: string;
  readonly deadline: number;
  resolve: () => void;
  reject: (err: Error) => void;
  conn: Conn | undefined;
  done: boolean;
  /** A reused socket closed before any byte of the answer (the agent ended it meanwhile): one fresh try. */
  retried: boolean;
  onAbort: (() => void) | undefined;
  signal: AbortSignal | undefined;
}

/** Where a connection's parser is. */
const enum Phase {
  Head,
  Length,
  Chunked,
  /** No length and not chunked: the body runs to the close (the socket is not kept). */
  Idle,
}

/** Chunked body parser states. */
const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailer,
}

/**
 * One kept-alive socket to one target. Its listeners are bound once, when
 * it connects; a probe sets `pending` and writes the request.
 */
class Conn {
  pending: Pending | undefined;
  phase = Phase.Idle;
  /** Head bytes not yet complete (rarely used: an answer usually comes in one read). */
  head: Buffer | undefined;
  remaining = 0;
  bodyBytes = 0;
  chunk = Chunk.Size;
  chunkLine = "";
  keepAlive = true;
  /** Bytes of the current answer seen (0: a close now may be the agent ending an idle socket). */
  seen = 0;
  connected = false;
  reused = false;
  dead = false;

  constructor(
    readonly socket: net.Socket,
    readonly key: string,
    private readonly owner: HttpProber,
    readonly secure: boolean,
  ) {
    socket.setNoDelay(true);
    socket.on(secure ? "secureConnect" : "connect", () => this.onConnect());
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("error", (err: Error) => this.fail(err));
    socket.on("close", () => this.onClose());
    socket.on("timeout", () => {
      // Idle, or past its verdict with a body that does not end: the probe's own deadline covers a pending one.
      if (!this.pending || this.pending.done) socket.destroy();
    });
  }

  start(p: Pending): void {
    this.pending = p;
    p.conn = this;
    this.phase = Phase.Head;
    this.head = undefined;
    this.seen = 0;
    this.bodyBytes = 0;
    this.keepAlive = true;
    if (this.connected) this.socket.write(p.request);
  }

  private onConnect(): void {
    const t = this.pending?.target;
    if (t && !sameAddress(this.socket.remoteAddress, t.address)) {
      const err = new DispatchRefused(`dispatch refused: connected to ${this.socket.remoteAddress}, not the checked ${t.address}`);
      return this.fail(err);
    }
    this.connected = true;
    if (this.pending) this.socket.write(this.pending.request);
  }

  private onData(d: Buffer): void {
    this.seen += d.length;
    let off = 0;
    while (off < d.length && !this.dead) {
      switch (this.phase) {
        case Phase.Head: {
          off = this.readHead(d, off);
          break;
        }
        case Phase.Length: {
          const n = Math.min(this.remaining, d.length - off);
          this.remaining -= n;
          off += n;
          if (this.remaining === 0) this.answered();
          break;
        }
        case Phase.Chunked:
          off = this.readChunked(d, off);
          break;
        case Phase.Idle:
          // Bytes nobody asked for (or a body to the close): this socket is not reused.
          this.socket.destroy();
          return;
      }
    }
  }

  /** Reads the head; returns where the body starts (or d.length while the head is incomplete). */
  private readHead(d: Buffer, off: number): number {
    let buf = off === 0 ? d : d.subarray(off);
    if (this.head) buf = Buffer.concat([this.head, buf]);
    const end = buf.indexOf(CRLF2);
    if (end < 0) {
      if (buf.length > MAX_HEAD_BYTES) this.fail(new Error(`health answer's header exceeds ${MAX_HEAD_BYTES} bytes`));
      else this.head = buf;
      return d.length;
    }
    const consumedOfD = d.length - (buf.length - (end + 4));
    this.head = undefined;
    const text = buf.toString("latin1", 0, end + 2);
    if (!text.startsWith("HTTP/1.") || text.charCodeAt(8) !== 32) {
      this.fail(new Error(`not an HTTP/1.x answer: ${JSON.stringify(text.slice(0, 40))}`));
      return d.length;
    }
    const status = Number(text.slice(9, 12));
    if (!(status >= 100 && status <= 999)) {
      this.fail(new Error(`bad HTTP status line: ${JSON.stringify(text.slice(0, 40))}`));
      return d.length;
    }
    if (status < 200) return consumedOfD; // an interim answer (100 Continue): the real one follows
    const http10 = text.charCodeAt(7) === 48; // "HTTP/1.0"
    this.keepAlive = http10 ? KEEP_ALIVE.test(text) : !CLOSE.test(text);
    const p = this.pending;
    if (p && !p.done) {
      if (status >= 200 && status < 300) this.owner.settle(p, undefined);
      else this.owner.settle(p, new HttpProbeFailed(`GET ${p.path} answered HTTP ${status}`), true);
    }
    // The status is the verdict; the body is read on so the socket can be reused.
    const length = CONTENT_LENGTH.exec(text);
    if (status === 204 || status === 304) {
      this.answered();
    } else if (CHUNKED.test(text)) {
      this.phase = Phase.Chunked;
      this.chunk = Chunk.Size;
      this.chunkLine = "";
    } else if (length) {
      this.remaining = Number(length[1]);
      if (this.remaining > MAX_BODY_BYTES) this.socket.destroy();
      else if (this.remaining === 0) this.answered();
      else this.phase = Phase.Length;
    } else {
      this.keepAlive = false;
      this.phase = Phase.Idle;
      this.socket.destroy();
    }
    return consumedOfD;
  }

  private readChunked(d: Buffer, off: number): number {
    while (off < d.length) {
      if (this.chunk === Chunk.Data) {
        const n = Math.min(this.remaining, d.length - off);
        this.remaining -= n;
        off += n;
        if ((this.bodyBytes += n) > MAX_BODY_BYTES) {
          this.socket.destroy();
          return d.length;
        }
        if (this.remaining === 0) this.chunk = Chunk.DataEnd;
        continue;
      }
      // Size, DataEnd and Trailer are lines.
      const nl = d.indexOf(10, off);
      const piece = d.toString("latin1", off, nl < 0 ? d.length : nl + 1);
      off = nl < 0 ? d.length : nl + 1;
      this.chunkLine += piece;
      if (this.chunkLine.length > 1024) {
        this.fail(new Error("bad chunked health answer"));
        return d.length;
      }
      if (nl < 0) return off;
      const line = this.chunkLine.trimEnd();
      this.chunkLine = "";
      if (this.chunk === Chunk.DataEnd) {
        this.chunk = Chunk.Size;
      } else if (this.chunk === Chunk.Size) {
        const size = parseInt(line, 16);
        if (!(size >= 0)) {
          this.fail(new Error("bad chunked health answer"));
          return d.length;
        }
        if (size === 0) this.chunk = Chunk.Trailer;
        else {
          this.remaining = size;
          this.chunk = Chunk.Data;
        }
      } else if (line === "") {
        this.answered();
        return off;
      }
    }
    return off;
  }

  /** The answer was read whole: the socket goes back to its target's free list (or closes). */
  private answered(): void {
    this.phase = Phase.Idle;
    const p = this.pending;
    this.pending = undefined;
    if (p && !p.done) this.owner.settle(p, undefined);
    if (!this.keepAlive || this.dead) this.socket.destroy();
    else this.owner.release(this);
  }

  fail(err: Error): void {
    const p = this.pending;
    this.pending = undefined;
    this.dead = true;
    this.socket.destroy();
    if (p && !p.done) this.owner.settle(p, err);
  }

  private onClose(): void {
    this.dead = true;
    const p = this.pending;
    this.pending = undefined;
    if (!p || p.done) return;
    // A kept-alive socket the agent closed as it was reused: a fresh one, once (a GET is idempotent).
    if (this.reused && this.seen === 0 && !p.retried) {
      p.retried = true;
      this.owner.send(p);
      return;
    }
    const err = new Error("socket hang up") as NodeJS.ErrnoException;
    err.code = "ECONNRESET";
    this.owner.settle(p, err);
  }
}

/**
 * HTTP health probes on raw keep-alive HTTP/1.1 sockets: a pre-built GET
 * is written, the status line (the verdict) and just enough of the head
 * (content-length, chunked, connection) to read the body to its end are
 * parsed, and the socket goes back to its target's free list. Connections
 * go to the checked address only (the address reached is checked again,
 * as dispatch does); Host and SNI keep the endpoint's name. One timer for
 * every probe's deadline (probes start in order and share one timeout,
 * so deadlines come in order: a queue, the timer armed for its head) —
 * no AbortController, timer or extra promise per probe. A node
 * http.request per probe was most of a probe's CPU (bench --only=health).
 */
export class HttpProber {
  /** Free sockets per target (LIFO), targets in least recently used order. */
  private readonly free = new Map<string, Conn[]>();
  /** Deadlines in start order. */
  private readonly queue: Pending[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;
  private armedAt = Infinity;
  private readonly inFlight = new Set<Pending>();
  /** Pre-built requests by target key and path. */
  private readonly requests = new Map<string, Buffer>();

  constructor(
    private readonly opts: {
      readonly timeoutMs: number;
      /** A free socket unused this long is closed. */
      readonly freeSocketMs: number;
      /** Free sockets kept per target at most. */
      readonly maxFreePerTarget: number;
      readonly userAgent: string;
    },
  ) {}

  /**
   * GET `path` on the target: resolves on a 2xx; rejects with
   * HttpProbeFailed (other status), DispatchRefused (the connection
   * reached another address), ProbeTimeout (no answer in time), the
   * signal's reason when it aborts, or the socket's error.
   */
  probe(target: PinnedTarget, path: string, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const p: Pending = {
        target,
        request: this.request(target, path),
        path,
        deadline: performance.now() + this.opts.timeoutMs,
        resolve,
        reject,
        conn: undefined,
        done: false,
        retried: false,
        onAbort: undefined,
        signal,
      };
      if (signal) {
        if (signal.aborted) return reject(signal.reason as Error);
        p.onAbort = () => this.settle(p, signal.reason as Error);
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.inFlight.add(p);
      this.queue.push(p);
      this.arm();
      this.send(p);
    });
  }

  /** Ends every probe in flight with `reason` (the round was aborted). */
  abortAll(reason: Error): void {
    for (const p of [...this.inFlight]) this.settle(p, reason);
  }

  /** Closes every socket; probes in flight fail. */
  close(): void {
    this.abortAll(new Error("probing stopped"));
    for (const list of this.free.values()) for (const c of list) c.socket.destroy();
    this.free.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = Infinity;
  }

  /** @internal On a free socket of the target, else a new one. */
  send(p: Pending): void {
    const key = pinnedKey(p.target);
    const list = this.free.get(key);
    let conn: Conn | undefined;
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (!c.dead && !c.socket.destroyed) {
        conn = c;
        break;
      }
    }
    if (conn) {
      conn.reused = true;
      conn.socket.ref();
      conn.start(p);
      return;
    }
    const t = p.target;
    const secure = t.url.protocol === "https:";
    const socket = secure
      ? tls.connect({ host: t.address, port: t.port, servername: sni(t), ALPNProtocols: ["http/1.1"] })
      : net.connect({ host: t.address, port: t.port });
    socket.setTimeout(this.opts.freeSocketMs);
    const c = new Conn(socket, key, this, secure);
    c.start(p);
  }

  /** @internal A socket whose answer was read whole. */
  release(c: Conn): void {
    let list = this.free.get(c.key);
    if (list) {
      // Least recently used targets first: touching moves it to the end.
      this.free.delete(c.key);
    } else {
      list = [];
      if (this.free.size >= MAX_TARGETS) {
        const [oldest, conns] = this.free.entries().next().value!;
        this.free.delete(oldest);
        for (const x of conns) x.socket.destroy();
      }
    }
    this.free.set(c.key, list);
    if (list.length >= this.opts.maxFreePerTarget) c.socket.destroy();
    else {
      // A free socket does not keep the process alive.
      c.socket.unref();
      list.push(c);
    }
  }

  /** @internal Ends a probe once; `keepSocket`: the error is the agent's answer, its socket reads on. */
  settle(p: Pending, err: Error | undefined, keepSocket = false): void {
    if (p.done) return;
    p.done = true;
    this.inFlight.delete(p);
    if (p.onAbort) p.signal!.removeEventListener("abort", p.onAbort);
    if (err) {
      if (keepSocket) return p.reject(err);
      // The socket is in an unknown state mid-answer: it goes.
      const c = p.conn;
      if (c && c.pending === p) {
        c.pending = undefined;
        c.dead = true;
        c.socket.destroy();
      }
      p.reject(err);
    } else p.resolve();
  }

  private request(t: PinnedTarget, path: string): Buffer {
    const key = `${pinnedKey(t)}|${path}`;
    let buf = this.requests.get(key);
    if (!buf) {
      if (this.requests.size >= MAX_TARGETS) this.requests.delete(this.requests.keys().next().value!);
      buf = Buffer.from(`GET ${path} HTTP/1.1\r\nhost: ${t.url.host}\r\nuser-agent: ${this.opts.userAgent}\r\naccept: */*\r\n\r\n`, "latin1");
      this.requests.set(key, buf);
    }
    return buf;
  }

  /** Arms the one timer for the earliest deadline still pending. */
  private arm(): void {
    while (this.head < this.queue.length && this.queue[this.head]!.done) this.head++;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
      return;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    const deadline = this.queue[this.head]!.deadline;
    if (this.timer && this.armedAt <= deadline) return;
    clearTimeout(this.timer);
    this.armedAt = deadline;
    this.timer = setTimeout(() => this.expire(), Math.max(0, deadline - performance.now()));
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    this.armedAt = Infinity;
    const now = performance.now();
    while (this.head < this.queue.length) {
      const p = this.queue[this.head]!;
      if (!p.done) {
        if (p.deadline > now) break;
        this.settle(p, new ProbeTimeout(`no answer within ${this.opts.timeoutMs}ms`));
      }
      this.head++;
    }
    this.arm();
  }
}
