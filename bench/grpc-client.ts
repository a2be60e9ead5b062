import http2 from "node:http2";
import net from "node:net";
import { percentile, TOKEN, type LoadResult } from "./lib.js";

/**
 * A small gRPC-over-h2c client for the bench process itself: many calls
 * with different bodies (h2load sends one body), `concurrency` in flight.
 */
export class GrpcLoader {
  private readonly sessions: http2.ClientHttp2Session[];

  /** `token` null: no `authorization` header (etcd 3.4 reads one as its own auth token even with auth off, and refuses the call). */
  constructor(
    port: number,
    connections = 4,
    private readonly token: string | null = TOKEN,
  ) {
    // TCP_NODELAY like h2load: node's http2 client leaves Nagle on, which
    // holds small request frames back and starves the server.
    const createConnection = () => net.connect({ port, host: "127.0.0.1", noDelay: true });
    this.sessions = Array.from({ length: connections }, () => http2.connect(`http://127.0.0.1:${port}`, { createConnection }));
  }

  call(path: string, body: Uint8Array, i = 0): Promise<{ status: number; message: string; bytes: Buffer }> {
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    return new Promise((resolve, reject) => {
      const headers: http2.OutgoingHttpHeaders = { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" };
      if (this.token !== null) headers.authorization = `Bearer ${this.token}`;
      const stream = this.sessions[i % this.sessions.length]!.request(headers);
      const chunks: Buffer[] = [];
      let status = -1;
      let message = "";
      const read = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) status = Number(h["grpc-status"]);
        if (typeof h["grpc-message"] === "string") message = decodeURIComponent(h["grpc-message"]);
      };
      stream.on("response", read);
      stream.on("trailers", read);
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => resolve({ status, message, bytes: Buffer.concat(chunks).subarray(5) }));
      stream.on("error", reject);
      stream.end(frame);
    });
  }

  /** `total` calls, `concurrency` in flight, body i from `bodyOf(i)`. */
  async load(path: string, bodyOf: (i: number) => Uint8Array, total: number, concurrency = 64): Promise<LoadResult> {
    // Bodies are encoded before the clock starts, as h2load's is: building
    // a registration in JS costs this one-core client about as much as the
    // server spends on it, and it is not what is being measured.
    const bodies = Array.from({ length: total }, (_, i) => bodyOf(i));
    const times: number[] = [];
    let next = 0;
    let failed = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < total) {
          const i = next++;
          const t0 = performance.now();
          const res = await this.call(path, bodies[i]!, i);
          times.push(performance.now() - t0);
          if (res.status !== 0) failed++;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    return { rps: total / seconds, p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), ok: total - failed, failed };
  }

  close(): void {
    for (const s of this.sessions) s.close();
  }
}
