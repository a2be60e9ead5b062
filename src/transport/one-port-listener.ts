import net from "node:net";
import tls from "node:tls";
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

/**
 * The TLS mode of the same port: ALPN picks the stack ("h2" for gRPC and
 * HTTP/2 Connect, "http/1.1" for REST, gRPC-Web and WebSocket), so no
 * sniffing is needed. With client auth, the handshake itself refuses a
 * certificate from another CA or an expired one ("require"), or lets it
 * through marked unauthorized ("request") for the guard to refuse per call.
 */
export function createTlsListener(
  h1: http.Server,
  h2: http2.Http2Server,
  options: tls.TlsOptions,
  handshakeTimeoutMs: number,
): tls.Server {
  const server = tls.createServer({ ...options, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: handshakeTimeoutMs });
  server.on("secureConnection", (socket) => {
    if (socket.alpnProtocol === "h2") h2.emit("connection", socket);
    else h1.emit("connection", socket);
  });
  server.on("tlsClientError", (_err, socket) => socket.destroy());
  return server;
}
