import WebSocket from "ws";
import { bearer, grpc } from "./grpc-client.js";

/** Collects events from a feed and lets a test wait for a count of them. */
export class Collected<T> {
  readonly items: T[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => (this.items.length >= w.n ? (w.resolve(), false) : true));
  }

  /** Resolves once `n` items arrived; rejects after `ms` with what did arrive. */
  waitFor(n: number, ms = 3_000): Promise<T[]> {
    if (this.items.length >= n) return Promise.resolve(this.items);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`expected ${n} events, got ${this.items.length}: ${JSON.stringify(this.items, (_k, v) => (typeof v === "bigint" ? String(v) : v)).slice(0, 2000)}`)),
        ms,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve(this.items);
        },
      });
    });
  }
}

export interface WsFeed {
  readonly events: Collected<any>;
  readonly ws: WebSocket;
  close(): void;
}

/** Opens /ws with the given query and resolves once the socket is open. */
export async function openWs(port: number, query = "", token = "test-bootstrap-token"): Promise<WsFeed> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws${query}`, { headers: { authorization: `Bearer ${token}` } });
  const events = new Collected<any>();
  ws.on("message", (data) => events.push(JSON.parse(data.toString())));
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  return { events, ws, close: () => ws.close() };
}

export interface GrpcFeed {
  readonly events: Collected<any>;
  close(): void;
}

/** Opens WatchEvents on a grpc-js HealthService client; resolves once the server has accepted it. */
export async function openWatch(health: any, request: Record<string, unknown>, metadata?: grpc.Metadata): Promise<GrpcFeed> {
  const call = health.WatchEvents(request, metadata ?? bearer());
  const events = new Collected<any>();
  call.on("data", (m: any) => events.push(m.event));
  call.on("error", (e: grpc.ServiceError) => {
    if (e.code !== grpc.status.CANCELLED) events.push({ error: e.code });
  });
  // The server subscribes as soon as the call arrives; a short pause lets
  // the request reach it before the test publishes.
  await new Promise((resolve) => setTimeout(resolve, 100));
  return { events, close: () => call.cancel() };
}
