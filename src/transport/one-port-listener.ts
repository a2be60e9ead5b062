import net from "node:net";
import type http from "node:http";
import type http2 from "node:http2";

/** The HTTP/2 connection preface starts with these bytes (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One cleartext port for two HTTP stacks. A cleartext connection cannot
 * negotiate HTTP/2 by ALPN, so the first bytes decide: the HTTP/2 preface
 * (gRPC clients connect with prior knowledge) goes to the http2 server,
 * anything else to the http/1.1 server (Connect, gRPC-Web, REST, WebSocket).
 *
 * The bytes are read while the socket is paused and `unshift`ed back. The h2
 * socket is handed over WITHOUT resume(): http2 reads it natively, and
 * resuming it here makes the session die with a GOAWAY. Replaying the bytes
 * through a JS Duplex would work but costs 4-5x in throughput.
 */
export function createOnePortListener(
  h1: http.Server,
  h2: http2.Http2Server,
  opts: { sniffTimeoutMs: number },
): net.Server {
  return net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
    let seen: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), opts.sniffTimeoutMs).unref();
    const done = () => {
      clearTimeout(timer);
      socket.removeListener("readable", onReadable);
      socket.removeListener("error", onError);
      socket.removeListener("end", onEnd);
    };
    const onError = () => {
      done();
      socket.destroy();
    };
    const onEnd = () => {
      done();
      socket.destroy();
    };
    const onReadable = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) return;
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      const prefaceSoFar = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      // Wait until the bytes tell the two apart (a byte or a few at most).
      if (prefaceSoFar && n < 4) return;
      done();
      socket.unshift(seen);
      if (prefaceSoFar) {
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("readable", onReadable);
    socket.on("error", onError);
    socket.on("end", onEnd);
  });
}
