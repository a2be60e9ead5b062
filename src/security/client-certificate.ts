import type { TLSSocket } from "node:tls";
import type { NodeRequest } from "../transport/node-types.js";
import type { PeerCertificate, Principal } from "./principal.js";

const cache = new WeakMap<object, PeerCertificate | undefined>();

/**
 * The client certificate of the connection a request came on, read once per
 * connection. Undefined on cleartext connections and when none was sent.
 */
export function peerCertificateOf(req: NodeRequest): PeerCertificate | undefined {
  return peerCertificateOfSocket("stream" in req ? req.stream.session?.socket : req.socket);
}

/** The same for a raw connection socket (an HTTP/2 session's). */
export function peerCertificateOfSocket(s: object | undefined): PeerCertificate | undefined {
  const socket = s as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== "function") return undefined;
  if (cache.has(socket)) return cache.get(socket);
  const cert = socket.getPeerCertificate();
  const peer: PeerCertificate | undefined =
    !cert || Object.keys(cert).length === 0
      ? undefined
      : {
          authorized: socket.authorized,
          authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
          subjectCN: typeof cert.subject?.CN === "string" ? cert.subject.CN : undefined,
          uris: (cert.subjectaltname ?? "")
            .split(", ")
            .filter((s) => s.startsWith("URI:"))
            .map((s) => s.slice(4)),
        };
  cache.set(socket, peer);
  return peer;
}

const spiffe = /^spiffe:\/\/([^/]+)\/tenant\/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})\/agent\/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})$/;

/**
 * The identity a verified certificate gives its caller: a SPIFFE-style URI
 * SAN `spiffe://<trust domain>/tenant/<tenant>/agent/<name>` names tenant
 * and agent; otherwise the subject CN names the agent in `defaultTenant`.
 * The agent may do everything an agent does, but only as itself.
 */
export function principalFromCertificate(
  peer: PeerCertificate,
  trustDomain: string | undefined,
  defaultTenant: string,
): Principal | undefined {
  for (const uri of peer.uris) {
    const m = spiffe.exec(uri);
    if (!m || (trustDomain !== undefined && m[1] !== trustDomain)) continue;
    return certificatePrincipal(uri, m[2]!, m[3]!);
  }
  if (peer.subjectCN) return certificatePrincipal(`CN=${peer.subjectCN}`, defaultTenant, peer.subjectCN);
  return undefined;
}

function certificatePrincipal(subject: string, tenant: string, agentName: string): Principal {
  return {
    subject,
    tenant,
    agentName,
    via: "certificate",
    scopes: new Set(["agents:read", "agents:write", "route", "events:read"]),
  };
}
