import { MemoryAgentStore } from "../src/registry/memory-agent-store.js";
import { agentStoreContract } from "./contracts/agent-store.contract.js";

agentStoreContract("memory", async () => new MemoryAgentStore());
