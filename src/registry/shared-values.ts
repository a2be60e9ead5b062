import { hash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import canonicalize from "canonicalize";
import { jsonFacts } from "../message-hints.js";
import { RecentMap } from "../recent-map.js";
import type { CapabilityRecord, ToolRecord } from "./agent-record.js";

/**
 * Equal parts of agent records, shared. A fleet is many replicas of a few
 * kinds of agent: capability names, tags, tools with their schemas and
 * labels repeat agent after agent, and each registration decodes them into
 * new strings and objects (at 100k agents that was ~40% of the heap).
 * Records are never mutated, so equal parts can be one frozen value.
 *
 * Bounded, least recently used out (RecentMap): unique values cost the
 * pools at most their size and only go unshared. Long keys are a SHA-256
 * of their text (a description or schema can be long, see tools()), so a
 * key never holds a long second copy of what it names and two different
 * values cannot collide. Lists are shared as well as their items, so what
 * is cached per list (by identity, elsewhere) is computed once per kind.
 *
 * Tools have a pool of their own: a fleet whose tools are unique per agent
 * (a description naming the agent) fills it with values used once (four
 * per agent), and in one pool with the capabilities those pushed out the
 * lists of kinds registered less often than every ~5,000 agents — such a
 * registration then made a new list, and with it its passport hash, its
 * messages and its catalog words again.
 */
export class SharedValues {
  private readonly strings = new RecentMap<string, string>(50_000);
  private readonly objects = new RecentMap<string, Slot>(20_000);
  private readonly toolPool = new RecentMap<string, Slot>(20_000);
  /** Slots of the decoder's shared schemas, by identity (see schema()). */
  private readonly schemaSlots = new WeakMap<JsonObject, Slot>();
  /** Serial numbers of pooled values: a list's key names its items by these (short, and no item is hashed twice). */
  private serial = 0;

  string(s: string): string {
    const known = this.strings.get(s);
    if (known !== undefined) return known;
    this.strings.add(s, s);
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
    return this.object(this.objects, key, () =>
      caps.map(
        (c) =>
          this.object(this.objects, `c${JSON.stringify([c.name, c.tags])}`, () => ({
            name: this.string(c.name),
            tags: Object.freeze(c.tags.map((t) => this.string(t))),
          })).value,
      ),
    ).value;
  }

  /**
   * Tools and lists of tools. A schema is pooled by its JSON as received
   * (the native JSON.stringify, no canonical form), a tool by its schema's
   * pooled value, name and description, a list by its pooled items: a key
   * is the text itself when short (no longer than the SHA-256 that would
   * stand for it), else a SHA-256 of it — so a key never holds a long
   * second copy of what it names, two different values cannot collide,
   * and a registration whose tools are unique to it (a description naming
   * the agent) hashes nothing. Two tools equal but for their schema's key
   * order are two values here, and one entry in the catalog, whose
   * identity is the canonical toolContentHash — computed once per shared
   * tool, on first use.
   */
  tools(tools: readonly ToolRecord[]): readonly ToolRecord[] {
    const items: ToolRecord[] = new Array(tools.length);
    let key = "T";
    for (let i = 0; i < tools.length; i++) {
      const t = tools[i]!;
      const schema = t.inputSchema === undefined ? undefined : this.schema(t.inputSchema);
      const item = this.object(
        this.toolPool,
        shortKey(`t${schema?.serial ?? ""}${JSON.stringify([t.name, t.description])}`),
        () => new PooledTool(this.string(t.name), t.description, schema?.value as JsonObject | undefined),
      );
      items[i] = item.value as ToolRecord;
      key += `${item.serial},`;
    }
    return this.object(this.toolPool, shortKey(key), () => items).value as readonly ToolRecord[];
  }

  labels(labels: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
    return this.object(this.objects, `l${JSON.stringify(labels)}`, () =>
      Object.fromEntries(Object.entries(labels).map(([k, v]) => [this.string(k), this.string(v)])),
    ).value;
  }

  /**
   * A schema's pooled value. The gRPC decoder hands every request with the
   * same schema bytes one deep-frozen object (transport/simple-decoding.ts,
   * which notes its JSON facts on it), so such a schema's slot is
   * remembered by identity: the JSON text key (JSON.stringify of the
   * schema, and its lookup) was ~1.5 µs per tool of every registration at
   * 10k agents. Only the decoder's: nothing can change one under the slot
   * it maps to (a merely frozen object may hold mutable ones). A WeakMap:
   * as many keys as distinct schemas the decoder keeps, not one per agent.
   */
  private schema(value: JsonObject): Slot {
    const known = this.schemaSlots.get(value);
    if (known !== undefined) return known;
    const slot = this.object(this.objects, shortKey(`s${JSON.stringify(value)}`), () => deepFreeze(value));
    if (jsonFacts(value) !== undefined) this.schemaSlots.set(value, slot);
    return slot;
  }

  /**
   * The pooled value of `key`, made and frozen when new. Frozen shallowly:
   * every value made here is built of strings and values pooled (so
   * frozen) already — only a schema, the request's own JSON, is frozen
   * deeply (schema()). A deep freeze walked each new tool and list again
   * (~0.5 µs a value more than Object.freeze, four per registration whose
   * tools are unique to it).
   */
  private object<T extends object>(pool: RecentMap<string, Slot>, key: string, make: () => T): Slot<T> {
    const known = pool.get(key);
    if (known !== undefined) return known as Slot<T>;
    const slot: Slot<T> = { value: Object.freeze(make()), serial: ++this.serial };
    pool.add(key, slot);
    return slot;
  }
}

/** A pooled value and its serial number. */
interface Slot<T extends object = object> {
  readonly value: T;
  readonly serial: number;
}

/** Keys up to this long are the text itself (a base64 SHA-256 is 44 characters). */
const SHORT_KEY = 64;

/** The key itself when short, else "#" and a SHA-256 of it after its first character (no JSON text begins with "#"). */
function shortKey(key: string): string {
  return key.length <= SHORT_KEY ? key : `${key[0]}#${hash("sha256", key, "base64")}`;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value) as JsonValue[]) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * A tool as the pool holds it: plain data (name, description, schema — the
 * only enumerable fields, frozen) that keeps its own toolContentHash in a
 * private field, which freezing leaves writable. Kept in a WeakMap, that
 * hash cost an entry per tool in an ephemeron table — at 10k agents a
 * WeakMap set measured more than the SHA-256 itself (~1.5–3 µs), and the
 * table is walked by every garbage collection.
 */
class PooledTool implements ToolRecord {
  #contentHash: string | undefined;

  constructor(
    readonly name: string,
    readonly description: string,
    readonly inputSchema: JsonObject | undefined,
  ) {}

  get contentHash(): string {
    return (this.#contentHash ??= computeToolHash(this));
  }
}

/** Hashes of tools that are not the pool's (a store's decoded records, tests). */
const toolHashes = new WeakMap<ToolRecord, string>();

/**
 * A tool's identity in the catalog: base64url SHA-256 of its name,
 * description and schema (RFC 8785 canonical JSON, so key order does not
 * matter) — the same on every replica. JSON, not a separator: no
 * description can pass for a schema. Remembered per tool object (records
 * share their tools, see SharedValues).
 */
export function toolContentHash(t: ToolRecord): string {
  if (t instanceof PooledTool) return t.contentHash;
  let h = toolHashes.get(t);
  if (h === undefined) toolHashes.set(t, (h = computeToolHash(t)));
  return h;
}

function computeToolHash(t: ToolRecord): string {
  const schema = t.inputSchema === undefined ? "" : canonicalSchema(t.inputSchema);
  return hash("sha256", JSON.stringify([t.name, t.description, schema]), "base64url");
}

const canonicalSchemas = new WeakMap<JsonObject, string>();

/** RFC 8785 JSON of a schema, remembered per schema object (tools registered alike share theirs, see SharedValues). */
function canonicalSchema(schema: JsonObject): string {
  let text = canonicalSchemas.get(schema);
  if (text === undefined) canonicalSchemas.set(schema, (text = canonicalize(schema)!));
  return text;
}
