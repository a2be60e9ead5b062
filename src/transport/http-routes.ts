import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Requirement } from "../security/access-policy.js";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import type { Call } from "./pipeline.js";

/**
 * An HTTP route that is not an RPC (RPCs and their REST paths come from
 * the descriptors): `/ws` today, `/metrics`, `/mcp` and the dashboard
 * later. A route is one entry: the server runs the call pipeline around it
 * (request id, the guard with the route's own access-policy entry, the
 * outcome record), so a handler starts with an admitted call.
 */
export interface HttpRoute {
  /** The exact request path; also the route's name in outcome records. */
  readonly path: string;
  /** Who may use it (RPCs have theirs in security/access-policy.ts). */
  readonly requirement: Requirement;
  /** Where a caller that cannot set headers puts its credential (a browser's WebSocket). */
  readonly credential?: (req: IncomingMessage, url: URL) => string | undefined;
  /** Serves a plain HTTP request; the call's outcome is the response's status. */
  readonly handle?: (req: NodeRequest, res: NodeResponse, call: Call) => void | Promise<void>;
  /**
   * Takes over an upgraded connection (WebSocket). Throws a ConnectError to
   * refuse it before anything is written; the call ends when the socket
   * closes.
   */
  readonly upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer, call: Call, url: URL) => void;
}
