import { hash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import canonicalize from "canonicalize";
import { LRUCache } from "lru-cache";
import type { CapabilityRecord, ToolRecord } from "./agent-record.js";

/**
 * Equal parts of agent records, shared. A fleet is many replicas of a few
 * kinds of agent: capability names, tags, tools with their schemas and
 * labels repeat agent after agent, and each registration decodes them into
 * new strings and objects (at 100k agents that was ~40% of the heap).
 * Records are never mutated, so equal parts can be one frozen value.
 *
 * Bounded, least recently used out: unique values cost the pools at most
 * their size and only go unshared. Tools and schemas are keyed by a
 * SHA-256 of their JSON (a description or schema can be long), so a key
 * never holds a second copy of what it names and two different tools
 * cannot collide. Lists are shared as well as their items, so what is
 * cached per list (by identity, elsewhere) is computed once per kind.
 *
 * Tools have a pool of their own: a fleet whose tools are unique per agent
 * (a description naming the agent) fills it with values used once (four
 * per agent), and in one pool with the capabilities those pushed out the
 * lists of kinds registered less often than every ~5,000 agents — such a
 * registration then made a new list, and with it its passport hash, its
 * messages and its catalog words again.
 */
export class SharedValues {
  private readonly strings = new LRUCache<string, string>({ max: 50_000 });
  private readonly objects = new LRUCache<string, object>({ max: 20_000 });
  private readonly toolPool = new LRUCache<string, object>({ max: 20_000 });

  string(s: string): string {
    const known = this.strings.get(s);
    if (known !== undefined) return known;
    this.strings.set(s, s);
    return s;
  }

  /**
   * The list itself is shared too (agents of one kind register the same
   * capabilities): what is cached per list — the passport's capability
   * hash, the capabilities' messages, the catalog's capability words — is
   * then computed once per kind, not per registration.
   */
  capabilities(caps: readonly CapabilityRecord[]): readonly CapabilityRecord[] {
    const key = `C${JSON.stringify(caps.map((c) => [c.name, c.tags]))}`;
    return this.object(key, () =>
      caps.map((c) =>
        this.object(`c${JSON.stringify([c.name, c.tags])}`, () => ({
          name: this.string(c.name),
          tags: Object.freeze(c.tags.map((t) => this.string(t))),
        })),
      ),
    );
  }

  /**
   * Tools and lists of tools, keyed by a SHA-256 of their JSON as received
   * (cheap: the native JSON.stringify, no canonical form). Two tools equal
   * but for their schema's key order are two values here, and one entry in
   * the catalog, whose identity is the canonical toolContentHash — computed
   * once per shared tool, on first use.
   */
  tools(tools: readonly ToolRecord[]): readonly ToolRecord[] {
    // Each tool's JSON is JSON.stringify([name, description, schema ?? null]),
    // written from its parts so the schema's JSON (its pool key) is made once.
    const schemas = tools.map((t) => (t.inputSchema === undefined ? "null" : JSON.stringify(t.inputSchema)));
    const json = tools.map((t, i) => `[${JSON.stringify(t.name)},${JSON.stringify(t.description)},${schemas[i]}]`);
    const key = `T${hash("sha256", `[${json.join(",")}]`, "base64")}`;
    return this.object(
      key,
      () =>
        tools.map((t, i) =>
          this.object(
            `t${hash("sha256", json[i]!, "base64")}`,
            () => ({
              name: this.string(t.name),
              description: t.description,
              inputSchema: t.inputSchema === undefined ? undefined : this.schema(t.inputSchema, schemas[i]!),
            }),
            this.toolPool,
          ),
        ),
      this.toolPool,
    );
  }

  labels(labels: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
    return this.object(`l${JSON.stringify(labels)}`, () =>
      Object.fromEntries(Object.entries(labels).map(([k, v]) => [this.string(k), this.string(v)])),
    );
  }

  private schema(value: JsonObject, json: string): JsonObject {
    return this.object(`s${hash("sha256", json, "base64")}`, () => value);
  }

  private object<T extends object>(key: string, make: () => T, pool = this.objects): T {
    const known = pool.get(key);
    if (known !== undefined) return known as T;
    const value = deepFreeze(make());
    pool.set(key, value);
    return value;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value) as JsonValue[]) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const toolHashes = new WeakMap<ToolRecord, string>();

/**
 * A tool's identity in the catalog: base64url SHA-256 of its name,
 * description and schema (RFC 8785 canonical JSON, so key order does not
 * matter) — the same on every replica. JSON, not a separator: no
 * description can pass for a schema. Remembered per tool object (records
 * share their tools, see SharedValues).
 */
export function toolContentHash(t: ToolRecord): string {
  let h = toolHashes.get(t);
  if (h === undefined) {
    const schema = t.inputSchema === undefined ? "" : canonicalSchema(t.inputSchema);
    h = hash("sha256", JSON.stringify([t.name, t.description, schema]), "base64url");
    toolHashes.set(t, h);
  }
  return h;
}

const canonicalSchemas = new WeakMap<JsonObject, string>();

/** RFC 8785 JSON of a schema, remembered per schema object (tools registered alike share theirs, see SharedValues). */
function canonicalSchema(schema: JsonObject): string {
  let text = canonicalSchemas.get(schema);
  if (text === undefined) canonicalSchemas.set(schema, (text = canonicalize(schema)!));
  return text;
}
