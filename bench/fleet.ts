import { Transport } from "../src/registry/agent-record.js";

/**
 * The fleet every scenario registers: agent i offers 5 of 50 capabilities
 * (2 of 20 tags each), 3 tools (names shared by every 97th agent, a
 * description of its own) with one shared schema, and one of 3 zones.
 */
const CAPS = 50;
const TAGS = 20;
export function agentInit(i: number) {
  const caps = new Set<number>();
  for (let k = 0; caps.size < 5; k++) caps.add((i * 7 + k * 13 + ((i * k) % 11)) % CAPS);
  return {
    name: `agent-${i}`,
    version: "1.0.0",
    endpoint: { url: `grpc://10.0.${(i >> 8) & 255}.${i & 255}:50051`, transport: Transport.GRPC },
    capabilities: [...caps].map((c, k) => ({ name: `cap.${c}`, tags: [`tag.${(i + k) % TAGS}`, `tag.${(i * 3 + k) % TAGS}`] })),
    tools: Array.from({ length: 3 }, (_, k) => ({
      name: `tool_${k}_${i % 97}`,
      description: `Tool ${k} of agent ${i}`,
      inputSchema: { type: "object", properties: { q: { type: "string" } } },
    })),
    labels: { zone: `z${i % 3}` },
  };
}
