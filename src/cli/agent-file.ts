import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { RegisterRequestSchema, type RegisterRequest } from "../../gen/federation/v1/registry_service_pb.js";
import { usageError } from "./exit-codes.js";

/** One agent of a file, with where it came from (for error messages). */
export interface AgentEntry {
  readonly where: string;
  readonly request: RegisterRequest;
}

/**
 * Reads agent files: YAML or JSON (JSON is YAML), each holding one agent,
 * a list of agents, `{agents: [...]}`, or several YAML documents. An agent
 * is a RegisterRequest in proto3 JSON — the body of `POST /agents/register`
 * — with three shorthands a person writes by hand: a capability as a plain
 * string, the endpoint as a plain URL, and leaseTtl as a number of seconds.
 * Unknown fields are refused, naming the file and the agent.
 */
export function readAgentFiles(paths: readonly string[]): AgentEntry[] {
  const entries: AgentEntry[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw usageError(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const docs = parseAllDocuments(text);
    if (!Array.isArray(docs)) throw usageError(`${path}: no agent in the file`);
    const values: unknown[] = [];
    for (const doc of docs) {
      if (doc.errors.length > 0) throw usageError(`${path}: not YAML or JSON: ${doc.errors[0]!.message.split("\n")[0]}`);
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) continue;
      if (Array.isArray(value)) values.push(...value);
      else if (isObject(value) && Array.isArray(value.agents) && Object.keys(value).length === 1) values.push(...value.agents);
      else values.push(value);
    }
    if (values.length === 0) throw usageError(`${path}: no agent in the file`);
    values.forEach((value, i) => {
      const where = values.length === 1 ? path : `${path}: agent ${i + 1}`;
      entries.push({ where, request: toRegisterRequest(value, where) });
    });
  }
  return entries;
}

function toRegisterRequest(value: unknown, where: string): RegisterRequest {
  if (!isObject(value)) throw usageError(`${where}: an agent must be a mapping (name, endpoint, capabilities, ...)`);
  const agent: Record<string, unknown> = { ...value };
  if (typeof agent.endpoint === "string") agent.endpoint = { url: agent.endpoint };
  if (Array.isArray(agent.capabilities)) {
    agent.capabilities = agent.capabilities.map((c: unknown) => (typeof c === "string" ? { name: c } : c));
  }
  for (const key of ["leaseTtl", "lease_ttl"]) {
    if (typeof agent[key] === "number") agent[key] = `${agent[key]}s`;
  }
  let request: RegisterRequest;
  try {
    request = fromJson(RegisterRequestSchema, agent as JsonValue);
  } catch (err) {
    const reason = (err as Error).message.replace(/^cannot decode message federation\.v1\.RegisterRequest from JSON: /, "");
    throw usageError(`${where}: ${reason}`);
  }
  if (request.name === "") throw usageError(`${where}: name is required`);
  return request;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
