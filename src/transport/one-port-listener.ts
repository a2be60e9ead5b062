import net from "node:net";
import { isHealthOnly, markHealthOnly } from "./connection-gate.js";
import tls from "node:tls";
import type http from "node:http";
import type http2 from "node:http2";
import type { ConnectionGate } from "./connection-gate.js";

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
 *
 * The sniffing timeout covers an HTTP/2 client's whole preface — the magic
 * and its first SETTINGS frame, which RFC 9113 §3.4 says follow at once —
 * so "PRI " and silence cannot park a socket in the http2 server, where no
 * timer would reach it. Every connection first passes the gate (caps in
 * all and per client address).
 */
export function createOnePortListener(
  h1: http.Server,
  h2: http2.Http2Server,
  opts: { sniffTimeoutMs: number; gate: ConnectionGate },
): net.Server {
  return net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => {
    if (!opts.gate.admit(socket)) return;
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
      if (prefaceSoFar) {
        // HTTP/2: hand over only with the whole preface and SETTINGS frame.
        const settingsAt = H2_PREFACE.length;
        if (seen.length < settingsAt + 9) return;
        if (seen[settingsAt + 3] !== 4 /* SETTINGS */) return onError();
        if (seen.length < settingsAt + 9 + seen.readUIntBE(settingsAt, 3)) return;
      }
      if (!prefaceSoFar) {
        const head = firstHead(seen);
        if (head === undefined) return;
        if (H2C.test(head)) seen = declineH2c(seen, head.length);
      }
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

const HEAD_END = Buffer.from("\r\n\r\n");
const H2C = /\r\nupgrade:[ \t]*h2c[ \t]*\r\n/i;

/**
 * The head of an HTTP/1.1 connection's first request (through its blank
 * line), or undefined while it is still coming; at most 8 KiB is waited
 * for. Clients offer h2c on the first request of a connection.
 */
function firstHead(seen: Buffer): string | undefined {
  const end = seen.indexOf(HEAD_END);
  if (end < 0) return seen.length < 8_192 ? undefined : "";
  return seen.toString("latin1", 0, end + 4);
}

/**
 * The first request without its `Upgrade: h2c` offer (the Upgrade and
 * HTTP2-Settings headers, and their names in Connection). Node's HTTP/1.1
 * parser stops at an upgrade request even when nobody takes the upgrade,
 * and what was pipelined behind it in the same read was never answered;
 * declined here, it is an ordinary request (RFC 9110 §7.8 lets a server
 * ignore the offer). A later offer on the same connection is declined by
 * the server's upgrade listener (server.ts), more slowly.
 */
function declineH2c(seen: Buffer, headLength: number): Buffer {
  const lines = seen.toString("latin1", 0, headLength - 4).split("\r\n");
  const kept: string[] = [];
  for (const line of lines) {
    const name = line.slice(0, line.indexOf(":")).trim().toLowerCase();
    if (name === "upgrade" || name === "http2-settings") continue;
    if (name === "connection") {
      const tokens = line
        .slice(line.indexOf(":") + 1)
        .split(",")
        .map((t) => t.trim())
        .filter((t) => t !== "" && !/^(upgrade|http2-settings)$/i.test(t));
      if (tokens.length > 0) kept.push(`Connection: ${tokens.join(", ")}`);
      continue;
    }
    kept.push(line);
  }
  return Buffer.concat([Buffer.from(`${kept.join("\r\n")}\r\n\r\n`, "latin1"), seen.subarray(headLength)]);
}

/**
 * The TLS mode of the same port: ALPN picks the stack ("h2" for gRPC and
 * HTTP/2 Connect, "http/1.1" for REST, gRPC-Web and WebSocket), so no
 * sniffing is needed (h2c is never offered over TLS). With client auth, the handshake itself refuses a
 * certificate from another CA or an expired one ("require"), or lets it
 * through marked unauthorized ("request") for the guard to refuse per call.
 */
export function createTlsListener(
  h1: http.Server,
  h2: http2.Http2Server,
  options: tls.TlsOptions,
  handshakeTimeoutMs: number,
  gate: ConnectionGate,
): tls.Server {
  const server = tls.createServer({ ...options, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: handshakeTimeoutMs });
  // Counted from the TCP accept, so handshakes in progress count too.
  server.on("connection", (raw: net.Socket) => void gate.admit(raw));
  server.on("secureConnection", (socket) => {
    markLike(socket, (socket as tls.TLSSocket & { _parent?: net.Socket })._parent);
    if (socket.alpnProtocol === "h2") h2.emit("connection", socket);
    else h1.emit("connection", socket);
  });
  server.on("tlsClientError", (_err, socket) => socket.destroy());
  return server;
}

/** A TLS socket is health-only when the TCP socket under it is. */
function markLike(socket: tls.TLSSocket, raw: net.Socket | undefined): void {
  if (isHealthOnly(raw)) markHealthOnly(socket);
}
