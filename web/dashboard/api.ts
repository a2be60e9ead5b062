/**
 * The service, as the page reaches it: our generated clients over the
 * Connect protocol (connect-web), on the page's own origin, with the token
 * the user entered. The token stays in sessionStorage: this tab only, gone
 * when it closes.
 */
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { HealthService } from "../../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../../gen/federation/v1/router_service_pb.js";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";

const TOKEN_KEY = "federation-core.dashboard.token";
/** ListAgents pages read for the snapshot, at most (1000 agents each). */
const MAX_PAGES = 10;

export const tokenStore = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (token: string): void => sessionStorage.setItem(TOKEN_KEY, token),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

export interface Api {
  readonly registry: Client<typeof RegistryService>;
  readonly health: Client<typeof HealthService>;
  readonly router: Client<typeof RouterService>;
}

export function connect(token: string): Api {
  const withToken: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  // Same origin: the service that served the page answers its calls.
  const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [withToken] });
  return {
    registry: createClient(RegistryService, transport),
    health: createClient(HealthService, transport),
    router: createClient(RouterService, transport),
  };
}

/** Every agent the token's tenant sees, up to MAX_PAGES pages; `truncated` when there were more. */
export async function listAgents(api: Api, signal: AbortSignal): Promise<{ agents: Agent[]; truncated: boolean }> {
  const agents: Agent[] = [];
  let pageToken = "";
  for (let page = 0; page < MAX_PAGES; page++) {
    const res = await api.registry.listAgents({ pageSize: 1000, pageToken }, { signal });
    agents.push(...res.agents);
    pageToken = res.nextPageToken;
    if (pageToken === "") return { agents, truncated: false };
  }
  return { agents, truncated: true };
}
