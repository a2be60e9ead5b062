import type { CatalogCursor, ToolView } from "../directory/tool-catalog.js";

/**
 * How catalog tools are named to MCP clients. A tool keeps its own name
 * while it is the only distinct tool of that name in the tenant's view;
 * when two distinct tools (different description or schema) share a name,
 * each is listed as `<name>__<first 8 characters of its tool id>` — stable
 * for as long as the tool's content is, whatever else comes and goes. The
 * suffix has a fixed length, so a suffixed name parses back unambiguously.
 */
const SUFFIX_CHARS = 8;
const SEPARATOR = "__";

export function suffixedName(name: string, toolId: string): string {
  return `${name}${SEPARATOR}${toolId.slice(0, SUFFIX_CHARS)}`;
}

/** The base name and id prefix a suffixed name says, or undefined when it has no suffix's shape. */
export function parseSuffixed(mcpName: string): { name: string; idPrefix: string } | undefined {
  const at = mcpName.length - SUFFIX_CHARS - SEPARATOR.length;
  if (at < 1 || mcpName.slice(at, at + SEPARATOR.length) !== SEPARATOR) return undefined;
  return { name: mcpName.slice(0, at), idPrefix: mcpName.slice(at + SEPARATOR.length) };
}

/**
 * The MCP names of one page of the catalog's browse order (name, then id:
 * tools of one name are adjacent). `before` is the name of the entry just
 * before the page (from the cursor), `after` the one just after it (one
 * entry read ahead), so a name shared across a page boundary is suffixed
 * on both pages.
 */
export function pageNames(entries: readonly ToolView[], before: string | undefined, after: string | undefined): string[] {
  return entries.map((e, i) => {
    const prev = i === 0 ? before : entries[i - 1]!.tool.name;
    const next = i === entries.length - 1 ? after : entries[i + 1]!.tool.name;
    return prev === e.tool.name || next === e.tool.name ? suffixedName(e.tool.name, e.id) : e.tool.name;
  });
}

/** The MCP cursor of a browse position: the last listed entry's catalog key (name, id), opaque to clients. */
export function encodeCursor(c: CatalogCursor): string {
  return Buffer.from(JSON.stringify(c.key.split("\u0000"))).toString("base64url");
}

/** A cursor this endpoint gave out, back as the catalog's; undefined for anything else. */
export function decodeCursor(cursor: string): CatalogCursor | undefined {
  if (cursor.length > 2_048) return undefined;
  try {
    const parts = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as unknown;
    if (!Array.isArray(parts) || parts.length !== 2 || !parts.every((p) => typeof p === "string")) return undefined;
    return { score: 0, key: `${parts[0]}\u0000${parts[1]}` };
  } catch {
    return undefined;
  }
}

/** The tool name of a catalog key. */
export function nameOfKey(key: string): string {
  return key.slice(0, key.lastIndexOf("\u0000"));
}
