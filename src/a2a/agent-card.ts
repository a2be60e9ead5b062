import { A2A_PROTOCOL_VERSION, type AgentCard, type AgentInterface, type AgentSkill } from "@a2a-js/sdk";
import { Transport, type AgentRecord } from "../registry/agent-record.js";

/**
 * A registered agent as an A2A agent card (protocol 1.0, the AgentCard of
 * `@a2a-js/sdk`), and the names both directions share.
 *
 * Capabilities and tools both become skills: a capability's skill has the
 * capability's name as its id and its tags as the skill's tags (its name
 * alone when it has none, read back as none); a tool's
 * skill has the id `tool:<name>` — a capability name cannot hold a colon,
 * so the two never collide and a card exported here maps back to the same
 * capabilities and tools (card-import.ts). Tool input schemas have no place
 * in a card and are not carried.
 */

/** The prefix that marks a tool's skill id. */
export const TOOL_SKILL_PREFIX = "tool:";
/** The tag every tool's skill carries. */
export const TOOL_SKILL_TAG = "mcp-tool";

/**
 * Transport ↔ A2A protocol binding. GRPC and HTTP+JSON are A2A's own names
 * for the same wire; the others are open-form names (the spec allows them)
 * for what A2A has no binding for. JSONRPC has no transport of ours: a card
 * that offers only JSONRPC cannot be registered.
 */
const BINDINGS: ReadonlyArray<readonly [Transport, string]> = [
  [Transport.GRPC, "GRPC"],
  [Transport.HTTP_JSON, "HTTP+JSON"],
  [Transport.CONNECT, "CONNECT"],
  [Transport.MCP_STREAMABLE_HTTP, "MCP"],
  [Transport.MCP_SSE, "MCP+SSE"],
];

export function bindingOf(transport: Transport): string {
  return BINDINGS.find(([t]) => t === transport)?.[1] ?? "HTTP+JSON";
}

/** The transport of a protocol binding (case-insensitive, as bindings are compared by name), or undefined. */
export function transportOf(binding: string): Transport | undefined {
  const upper = binding.toUpperCase();
  return BINDINGS.find(([, b]) => b === upper)?.[0];
}

export const knownBindings = (): string => BINDINGS.map(([, b]) => b).join(", ");

/** What the registry's tasks carry, both ways. */
const JSON_MODE = "application/json";

export function agentCard(agent: AgentRecord, federationName: string): AgentCard {
  const iface: AgentInterface = {
    url: agent.endpoint.url,
    protocolBinding: bindingOf(agent.endpoint.transport),
    tenant: "",
    protocolVersion: A2A_PROTOCOL_VERSION,
  };
  const skills: AgentSkill[] = [
    // A capability without tags is tagged with its own name: the JSON form drops an empty list, and the spec requires tags.
    ...agent.capabilities.map((c) =>
      skill(c.name, c.name, `Capability "${c.name}"${c.tags.length ? ` (${c.tags.join(", ")})` : ""}.`, c.tags.length ? [...c.tags] : [c.name]),
    ),
    ...agent.tools.map((t) => skill(`${TOOL_SKILL_PREFIX}${t.name}`, t.name, t.description || `Tool "${t.name}".`, [TOOL_SKILL_TAG])),
  ];
  const capabilities = agent.capabilities.map((c) => c.name).join(", ");
  return {
    name: agent.name,
    description: `${agent.name}${agent.version ? ` ${agent.version}` : ""}, registered with the ${federationName} federation; capabilities: ${capabilities}.`,
    supportedInterfaces: [iface],
    provider: undefined,
    // Required by the spec; an agent that registered without one gets the conventional zero.
    version: agent.version || "0.0.0",
    capabilities: { streaming: false, pushNotifications: false, extensions: [], extendedAgentCard: false },
    // The registry does not know how the agent authenticates its callers.
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: [JSON_MODE],
    defaultOutputModes: [JSON_MODE],
    skills,
    signatures: [],
  };
}

export function skill(id: string, name: string, description: string, tags: string[], examples: string[] = []): AgentSkill {
  return { id, name, description, tags, examples, inputModes: [], outputModes: [], securityRequirements: [] };
}
