import { create } from "@bufbuild/protobuf";
import type { Duration } from "@bufbuild/protobuf/wkt";
import { RegisterRequestSchema, type RegisterRequest } from "../../gen/federation/v1/registry_service_pb.js";
import { errors } from "../errors.js";
import type { Transport } from "../registry/agent-record.js";
import { limits } from "../validation/limits.js";
import { knownBindings, TOOL_SKILL_PREFIX, transportOf } from "./agent-card.js";

/** What RegisterFromCard may say over the card (empty strings: from the card). */
export interface CardOverrides {
  readonly agentId: string;
  readonly name: string;
  readonly version: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly leaseTtl: Duration | undefined;
}

/** The label that records where an agent's card came from (when the URL fits a label value). */
export const CARD_URL_LABEL = "a2a.card_url";

type Json = Record<string, unknown>;

/**
 * An A2A agent card (its JSON form, as fetched) as a RegisterRequest: the
 * first interface with a binding we dispatch over is the endpoint, skills
 * become capabilities (id and tags) and tools (ids `tool:<name>`, see
 * agent-card.ts). Every field the mapping reads is checked here against
 * the registry's bounds, so a refusal names the card's field
 * ("card.skills[2].id: ..."), not the RegisterRequest field it would have
 * become. The spec's required fields are required, except that a required
 * list may be absent (proto3 JSON leaves empty lists out). A v0.3 card (`url`,
 * `preferredTransport`, `additionalInterfaces`) is read as well: most
 * cards published so far have that shape.
 */
export function registerRequestFromCard(card: unknown, overrides: CardOverrides, cardUrl: string): RegisterRequest {
  const c = object("card", card);
  const name = overrides.name || text("card.name", c.name);
  if (!overrides.name && !limits.namePattern.test(name)) {
    throw errors.invalidArgument("card.name", `"${name.slice(0, 80)}" is not a valid agent name (${limits.namePattern}); set name to register it under another`);
  }
  text("card.description", c.description);
  const version = overrides.version || text("card.version", c.version);
  if (!overrides.version && !limits.versionPattern.test(version)) {
    throw errors.invalidArgument("card.version", `"${version.slice(0, 80)}" is not a valid version (${limits.versionPattern}); set version to override it`);
  }
  object("card.capabilities", c.capabilities);
  // Required lists may be absent: the spec's JSON form (proto3 JSON) leaves out an empty list.
  strings("card.defaultInputModes", c.defaultInputModes ?? []);
  strings("card.defaultOutputModes", c.defaultOutputModes ?? []);

  const endpoint = chooseInterface(c);
  const { capabilities, tools } = skills(c.skills);

  const labels: Record<string, string> = {};
  if (cardUrl.length <= limits.maxLabelValueLength) labels[CARD_URL_LABEL] = cardUrl;
  Object.assign(labels, overrides.labels);
  return create(RegisterRequestSchema, {
    agentId: overrides.agentId,
    name,
    version,
    endpoint,
    capabilities,
    tools,
    labels,
    leaseTtl: overrides.leaseTtl,
  });
}

interface Candidate {
  readonly field: string;
  readonly url: unknown;
  readonly binding: unknown;
}

function chooseInterface(c: Json): { url: string; transport: Transport } {
  let candidates: Candidate[];
  if (c.supportedInterfaces !== undefined || c.url === undefined) {
    const list = array("card.supportedInterfaces", c.supportedInterfaces);
    if (list.length === 0) throw errors.invalidArgument("card.supportedInterfaces", "at least one interface is required");
    candidates = list.map((x, i) => {
      const field = `card.supportedInterfaces[${i}]`;
      const o = object(field, x);
      return { field, url: o.url, binding: o.protocolBinding };
    });
    candidates.forEach((x) => text(`${x.field}.protocolBinding`, x.binding));
  } else {
    // v0.3: the main URL speaks preferredTransport (JSONRPC when absent), the others are listed beside it.
    const extra = c.additionalInterfaces === undefined ? [] : array("card.additionalInterfaces", c.additionalInterfaces);
    candidates = [
      { field: "card", url: c.url, binding: c.preferredTransport ?? "JSONRPC" },
      ...extra.map((x, i) => {
        const field = `card.additionalInterfaces[${i}]`;
        const o = object(field, x);
        return { field, url: o.url, binding: o.transport };
      }),
    ];
  }
  const chosen = candidates.find((x) => typeof x.binding === "string" && transportOf(x.binding) !== undefined);
  if (!chosen) {
    const offered = candidates.map((x) => String(x.binding)).join(", ");
    throw errors.invalidArgument(
      candidates[0]!.field === "card" ? "card.preferredTransport" : "card.supportedInterfaces",
      `no interface with a protocol binding the federation dispatches over (${knownBindings()}); the card offers ${offered}`,
    );
  }
  return { url: endpointUrl(`${chosen.field}.url`, chosen.url), transport: transportOf(chosen.binding as string)! };
}

function skills(value: unknown): { capabilities: { name: string; tags: string[] }[]; tools: { name: string; description: string }[] } {
  const list = array("card.skills", value);
  const capabilities: { name: string; tags: string[] }[] = [];
  const tools: { name: string; description: string }[] = [];
  list.forEach((x, i) => {
    const field = `card.skills[${i}]`;
    const s = object(field, x);
    const id = text(`${field}.id`, s.id);
    text(`${field}.name`, s.name);
    const description = text(`${field}.description`, s.description);
    const listed = strings(`${field}.tags`, s.tags ?? []);
    // A skill tagged with its own id alone is a capability without tags (agent-card.ts).
    const tags = listed.length === 1 && listed[0] === id ? [] : listed;
    if (id.startsWith(TOOL_SKILL_PREFIX)) {
      const name = id.slice(TOOL_SKILL_PREFIX.length);
      if (!limits.toolNamePattern.test(name)) throw errors.invalidArgument(`${field}.id`, `"${id.slice(0, 80)}" does not name a valid tool (${limits.toolNamePattern} after "${TOOL_SKILL_PREFIX}")`);
      if (tools.some((t) => t.name === name)) throw errors.invalidArgument(`${field}.id`, `duplicate skill "${id}"`);
      if (description.length > limits.maxDescriptionLength) throw errors.invalidArgument(`${field}.description`, `must be at most ${limits.maxDescriptionLength} characters`);
      tools.push({ name, description });
      return;
    }
    if (!limits.capabilityPattern.test(id)) throw errors.invalidArgument(`${field}.id`, `"${id.slice(0, 80)}" is not a valid capability name (${limits.capabilityPattern})`);
    if (capabilities.some((c) => c.name === id)) throw errors.invalidArgument(`${field}.id`, `duplicate skill "${id}"`);
    if (tags.length > limits.maxTagsPerCapability) throw errors.invalidArgument(`${field}.tags`, `at most ${limits.maxTagsPerCapability} are allowed`);
    tags.forEach((t, j) => {
      if (!limits.tagPattern.test(t)) throw errors.invalidArgument(`${field}.tags[${j}]`, `"${t.slice(0, 80)}" is not a valid tag (${limits.tagPattern})`);
    });
    capabilities.push({ name: id, tags });
  });
  if (capabilities.length === 0) {
    throw errors.invalidArgument("card.skills", `at least one skill that is not a tool (an id without "${TOOL_SKILL_PREFIX}") is required`);
  }
  if (capabilities.length > limits.maxCapabilities) throw errors.invalidArgument("card.skills", `at most ${limits.maxCapabilities} capability skills are allowed`);
  if (tools.length > limits.maxTools) throw errors.invalidArgument("card.skills", `at most ${limits.maxTools} tool skills are allowed`);
  return { capabilities, tools };
}

function endpointUrl(field: string, value: unknown): string {
  const raw = text(field, value);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw errors.invalidArgument(field, `"${raw.slice(0, 80)}" is not a valid URL`);
  }
  if (raw.length > limits.maxUrlLength) throw errors.invalidArgument(field, `must be at most ${limits.maxUrlLength} characters`);
  if (!(limits.urlSchemes as readonly string[]).includes(url.protocol)) {
    throw errors.invalidArgument(field, `scheme must be one of http, https, grpc, grpcs; got "${url.protocol.slice(0, -1)}"`);
  }
  return raw;
}

function kind(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "an array" : typeof v;
}

function object(field: string, v: unknown): Json {
  if (v === undefined) throw errors.invalidArgument(field, "is required");
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw errors.invalidArgument(field, `must be an object, got ${kind(v)}`);
  return v as Json;
}

function array(field: string, v: unknown): unknown[] {
  if (v === undefined) throw errors.invalidArgument(field, "is required");
  if (!Array.isArray(v)) throw errors.invalidArgument(field, `must be an array, got ${kind(v)}`);
  return v;
}

function text(field: string, v: unknown): string {
  if (v === undefined || v === "") throw errors.invalidArgument(field, "is required");
  if (typeof v !== "string") throw errors.invalidArgument(field, `must be a string, got ${kind(v)}`);
  return v;
}

function strings(field: string, v: unknown): string[] {
  const list = array(field, v);
  list.forEach((x, i) => {
    if (typeof x !== "string") throw errors.invalidArgument(`${field}[${i}]`, `must be a string, got ${kind(x)}`);
  });
  return list as string[];
}
