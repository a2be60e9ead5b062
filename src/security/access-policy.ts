import type { Scope } from "./principal.js";

/**
 * What each RPC requires, in one table. "public" needs no credentials;
 * "agent" is agents:write, or the passport / certificate of the agent named
 * in the request (checked by the registry); admin implies every scope.
 * An RPC missing from the table is refused, so a new RPC is closed by
 * default.
 */
export type Requirement = Scope | "public" | "agent";

const policy: Record<string, Requirement> = {
  "federation.v1.RegistryService/Register": "agents:write",
  "federation.v1.RegistryService/Heartbeat": "agent",
  "federation.v1.RegistryService/HeartbeatStream": "agent",
  "federation.v1.RegistryService/Unregister": "agent",
  "federation.v1.RegistryService/GetAgent": "agents:read",
  "federation.v1.RegistryService/ListAgents": "agents:read",
  "federation.v1.RegistryService/GetAgentCard": "agents:read",
  "federation.v1.RegistryService/RegisterFromCard": "agents:write",
  "federation.v1.DirectoryService/GetManifest": "public",
  "federation.v1.DirectoryService/GetJwks": "public",
  "federation.v1.DirectoryService/Discover": "agents:read",
  "federation.v1.DirectoryService/ListTools": "agents:read",
  "federation.v1.DirectoryService/SearchTools": "agents:read",
  "federation.v1.DirectoryService/ListToolProviders": "agents:read",
  "federation.v1.RouterService/Route": "route",
  "federation.v1.RouterService/GetTask": "route",
  "federation.v1.RouterService/ReportOutcome": "route",
  "federation.v1.HealthService/Check": "public",
  "federation.v1.HealthService/GetFleetHealth": "agents:read",
  "federation.v1.HealthService/WatchFleetHealth": "agents:read",
  "federation.v1.HealthService/ListRemediations": "agents:read",
  "federation.v1.HealthService/WatchEvents": "events:read",
  "federation.v1.AdminService/MintToken": "admin",
  "federation.v1.AdminService/RotateSigningKey": "admin",
  "federation.v1.AdminService/ShareAgent": "admin",
  "federation.v1.FederationService/AddPeer": "admin",
  "federation.v1.FederationService/RemovePeer": "admin",
  "federation.v1.FederationService/ListPeers": "admin",
  "grpc.health.v1.Health/Check": "public",
  "grpc.health.v1.Health/Watch": "public",
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "public",
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "public",
};

/**
 * What the non-RPC HTTP routes (transport/http-routes.ts) that carry
 * domain calls require. /mcp: `agents:read` to connect and list the
 * catalog; its tools/call also needs `route` (checked per call by the MCP
 * endpoint, since one route carries both).
 */
export const routePolicy = {
  "/.well-known/agent-card.json": "public",
  "/mcp": "agents:read",
  "/mcp tools/call": "route",
  // The dashboard's page and assets; the data it shows comes from the RPCs above, with the user's token.
  "/dashboard/": "public",
} as const satisfies Record<string, Requirement>;

export function requirementOf(service: string, method: string): Requirement | undefined {
  return policy[`${service}/${method}`];
}
