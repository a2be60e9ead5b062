import { A2A_PROTOCOL_VERSION, type AgentCard, type SecurityScheme } from "@a2a-js/sdk";
import { skill } from "./agent-card.js";

export interface FederationCardInput {
  readonly name: string;
  readonly version: string;
  /** Where clients reach this service: FEDERATION_PUBLIC_URL, or what the request's Host says. */
  readonly url: string;
  /** Client certificates are accepted (TLS_CLIENT_AUTH optional or require). */
  readonly mutualTls: boolean;
}

const BEARER = "bearer";
const MTLS = "mtls";

/**
 * The federation's own A2A agent card (served at /.well-known/agent-card.json).
 *
 * Its interfaces are the ones the service speaks on its one port: gRPC and
 * HTTP+JSON (the REST transcoding of the same RPCs; Connect and gRPC-Web
 * are served there too but have no A2A binding name). JSONRPC is not
 * listed: nothing here speaks JSON-RPC. The skills are the federation's
 * own operations and name their RPC and REST path — the service is not an
 * A2A task executor (there is no a2a.v1 SendMessage); the card lets A2A
 * tooling discover what it is, where, and how to authenticate.
 */
export function federationCard(input: FederationCardInput): AgentCard {
  const securitySchemes: Record<string, SecurityScheme> = {
    [BEARER]: {
      scheme: {
        $case: "httpAuthSecurityScheme",
        value: {
          description: "A JWT signed by the federation (keys at /.well-known/jwks.json; minted by AdminService/MintToken) or by a trusted issuer; scopes in its `scope` claim.",
          scheme: "Bearer",
          bearerFormat: "JWT",
        },
      },
    },
  };
  if (input.mutualTls) {
    securitySchemes[MTLS] = { scheme: { $case: "mtlsSecurityScheme", value: { description: "A client certificate from the trusted CA (an agent's SPIFFE identity)." } } };
  }
  const scoped = (scope: string) => [{ schemes: { [BEARER]: { list: [scope] } } }];
  const withScope = (s: ReturnType<typeof skill>, scope: string) => ({ ...s, securityRequirements: scoped(scope) });
  return {
    name: input.name,
    description:
      "Federation Core: a directory, registry and router for AI agents. Agents register their capabilities and tools; " +
      "callers discover agents, search the federated tool catalog and route tasks to the best agent, which the federation dispatches to.",
    supportedInterfaces: [
      { url: input.url, protocolBinding: "GRPC", tenant: "", protocolVersion: A2A_PROTOCOL_VERSION },
      { url: input.url, protocolBinding: "HTTP+JSON", tenant: "", protocolVersion: A2A_PROTOCOL_VERSION },
    ],
    provider: undefined,
    version: input.version,
    // Streaming: the event feed (HealthService/WatchEvents over gRPC and Connect, /ws for browsers).
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes,
    securityRequirements: [{ schemes: { [BEARER]: { list: [] } } }, ...(input.mutualTls ? [{ schemes: { [MTLS]: { list: [] } } }] : [])],
    defaultInputModes: ["application/json", "application/grpc", "application/connect+proto"],
    defaultOutputModes: ["application/json", "application/grpc", "application/connect+proto"],
    skills: [
      withScope(
        skill("discover", "Discover agents", "Finds live agents by capability and tag (DirectoryService/Discover, GET /agents/discover).", ["directory", "discovery", "agents"], [
          "GET /agents/discover?capabilities=code.generate",
        ]),
        "agents:read",
      ),
      withScope(
        skill("route", "Route a task", "Picks the best agent for a task by reputation, load and breaker state and dispatches it (RouterService/Route, POST /route).", ["router", "dispatch", "tasks"], [
          'POST /route {"capabilities": ["code.generate"], "task": {...}}',
        ]),
        "route",
      ),
      withScope(
        skill("search-tools", "Search tools", "Searches the federated tool catalog by text, capability and tag (DirectoryService/SearchTools, GET /tools/search).", ["tools", "search", "catalog"], [
          "GET /tools/search?query=weather",
        ]),
        "agents:read",
      ),
      withScope(
        skill("list-tools", "List tools", "Lists the tool catalog, paged (DirectoryService/ListTools, GET /tools); also as one MCP server at /mcp.", ["tools", "catalog", "mcp"]),
        "agents:read",
      ),
      withScope(
        skill("register", "Register an agent", "Registers an agent, or one from its A2A card URL, and issues its passport (RegistryService/Register, POST /agents/register; RegisterFromCard, POST /agents/register-from-card).", ["registry", "agents", "a2a"]),
        "agents:write",
      ),
      withScope(
        skill("watch-events", "Watch events", "Streams registry, routing and health events, resumable by event id (HealthService/WatchEvents, GET /events; /ws).", ["events", "streaming"]),
        "events:read",
      ),
    ],
    signatures: [],
  };
}
