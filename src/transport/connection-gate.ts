import type net from "node:net";

export interface GateLimits {
  /** Open connections in all. */
  readonly max: number;
  /** Open connections from one client address. */
  readonly maxPerClient: number;
  /** Connections beyond `max` kept for health checks only. */
  readonly healthReserve: number;
}

const RESERVE = Symbol("health-only connection");

/**
 * Counts open connections, in all and per client address, at the door:
 * a connection over either cap is closed before a byte is read, so one
 * host cannot hold every descriptor the process has. Past `max`, up to
 * `healthReserve` more are let in marked health-only, so /health and
 * grpc.health.v1 keep answering (`isHealthOnly`) while the cap bites.
 */
export class ConnectionGate {
  private open = 0;
  private readonly perClient = new Map<string, number>();
  /** Connections refused since start (for tests and logs). */
  refused = 0;

  constructor(private readonly limits: GateLimits) {}

  /** Admits the socket (counting it until it closes), or destroys it and says false. */
  admit(socket: net.Socket): boolean {
    const client = socket.remoteAddress ?? "";
    const mine = this.perClient.get(client) ?? 0;
    if (mine >= this.limits.maxPerClient || this.open >= this.limits.max + this.limits.healthReserve) {
      this.refused++;
      socket.destroy();
      return false;
    }
    if (this.open >= this.limits.max) markHealthOnly(socket);
    this.open++;
    this.perClient.set(client, mine + 1);
    socket.once("close", () => {
      this.open--;
      const left = (this.perClient.get(client) ?? 1) - 1;
      if (left === 0) this.perClient.delete(client);
      else this.perClient.set(client, left);
    });
    return true;
  }

  get openConnections(): number {
    return this.open;
  }
}

export function markHealthOnly(socket: object): void {
  (socket as { [RESERVE]?: true })[RESERVE] = true;
}

/** A connection let in on the health reserve: it may only ask for health. */
export function isHealthOnly(socket: object | null | undefined): boolean {
  return socket != null && (socket as { [RESERVE]?: true })[RESERVE] === true;
}

const HEALTH_PATHS = new Set(["/health", "/grpc.health.v1.Health/Check", "/federation.v1.HealthService/Check"]);

/** The paths a health-only connection may use. */
export function isHealthPath(path: string): boolean {
  return HEALTH_PATHS.has(path);
}
