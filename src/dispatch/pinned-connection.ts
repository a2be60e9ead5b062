import http from "node:http";
import https from "node:https";
import { isIP, type LookupFunction, type Socket } from "node:net";
import { DispatchRefused, type PinnedTarget } from "./address-guard.js";

/**
 * What every dispatch connection shares: it goes to the pinned address only
 * (Host and SNI keep the URL's name), and the address the socket actually
 * reached is checked again.
 */

export const isSecure = (url: URL): boolean => url.protocol === "https:" || url.protocol === "grpcs:";

/** A host name's form for TLS SNI (none for an IP literal, as RFC 6066 says). */
export function sni(t: PinnedTarget): string | undefined {
  return isIP(t.hostname) === 0 ? t.hostname : undefined;
}

/** IPv6 text forms differ (zeros, case): compare canonical forms. */
export function sameAddress(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const canon = (x: string) => (isIP(x) === 6 ? new URL(`http://[${x}]`).hostname : x);
  return canon(a) === canon(b);
}

/** A `lookup` that answers the pinned address whatever it is asked (node asks with `all` when it races families). */
export function pinnedLookup(t: PinnedTarget): LookupFunction {
  return ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (opts?.all) cb(null, [{ address: t.address, family: t.family }]);
    else cb(null, t.address, t.family);
  }) as unknown as LookupFunction;
}

/** The pool key of a pinned target: scheme, name, checked address and port. */
export const pinnedKey = (t: PinnedTarget): string => `${t.url.protocol}//${t.hostname}|${t.address}|${t.port}`;

/** Free keep-alive sockets are closed after this (below node's 5 s server keepAliveTimeout, so a reused socket is rarely one the agent is closing). */
export const FREE_SOCKET_MS = 4_000;

/**
 * A keep-alive agent for one pinned target. The agent's own `lookup` makes
 * every socket it opens connect to the checked address.
 */
export function keepAliveAgent(t: PinnedTarget): http.Agent {
  const opts = { keepAlive: true, timeout: FREE_SOCKET_MS, scheduling: "lifo" as const, lookup: pinnedLookup(t), servername: sni(t) };
  return isSecure(t.url) ? new https.Agent(opts) : new http.Agent(opts);
}

/** An agent for one pinned target whose sockets close after their request (a probe's). */
export function oneShotAgent(t: PinnedTarget): http.Agent {
  const opts = { keepAlive: false, lookup: pinnedLookup(t), servername: sni(t) };
  return isSecure(t.url) ? new https.Agent(opts) : new http.Agent(opts);
}

/**
 * Checks the address a request's socket reached (once, when it connects; a
 * reused keep-alive socket was checked when it connected) and fails the
 * request when it is not the pinned one.
 */
export function checkConnectedAddress(req: http.ClientRequest, t: PinnedTarget, fail: (err: Error) => void): void {
  req.on("socket", (socket: Socket) => {
    const check = () => {
      if (!sameAddress(socket.remoteAddress, t.address)) {
        const err = new DispatchRefused(`dispatch refused: connected to ${socket.remoteAddress}, not the checked ${t.address}`);
        socket.destroy(err);
        fail(err);
      }
    };
    if (!socket.connecting) check();
    else socket.once(isSecure(t.url) ? "secureConnect" : "connect", check);
  });
}
