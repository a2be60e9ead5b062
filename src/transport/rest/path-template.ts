/**
 * google.api.http path templates (the grammar in google/api/http.proto):
 *
 *   Template = "/" Segments [ Verb ] ;
 *   Segment  = "*" | "**" | LITERAL | Variable ;
 *   Variable = "{" FieldPath [ "=" Segments ] "}" ;
 *
 * A variable without segments matches one path segment.
 */
type Part =
  | { readonly kind: "literal"; readonly value: string }
  | { readonly kind: "one" }
  | { readonly kind: "rest" }
  | { readonly kind: "var"; readonly field: string; readonly parts: readonly Part[] };

export interface PathTemplate {
  readonly source: string;
  readonly parts: readonly Part[];
  readonly verb: string;
  /** Sort key: literals before variables before "**", segment by segment. */
  readonly rank: readonly number[];
}

export function parsePathTemplate(source: string): PathTemplate {
  if (!source.startsWith("/")) throw new Error(`path template "${source}" must start with "/"`);
  let body = source.slice(1);
  let verb = "";
  const lastColon = body.lastIndexOf(":");
  if (lastColon > body.lastIndexOf("}") && lastColon > body.lastIndexOf("/")) {
    verb = body.slice(lastColon + 1);
    body = body.slice(0, lastColon);
  }
  const parts: Part[] = [];
  for (const token of splitTopLevel(body)) {
    const v = /^\{([A-Za-z_][A-Za-z0-9_.]*)(?:=(.+))?\}$/.exec(token);
    if (v) parts.push({ kind: "var", field: v[1]!, parts: v[2] ? v[2].split("/").map(simple) : [{ kind: "one" }] });
    else parts.push(simple(token));
  }
  const rank = parts.flatMap((p) => (p.kind === "var" ? p.parts : [p])).map((p) =>
    p.kind === "literal" ? 0 : p.kind === "one" ? 1 : 2,
  );
  return { source, parts, verb, rank };
}

/** Path variables by field path, or undefined when the path does not match. */
export function matchPath(t: PathTemplate, segments: readonly string[], verb: string): Map<string, string> | undefined {
  if (verb !== t.verb) return undefined;
  const vars = new Map<string, string>();
  const end = matchParts(t.parts, segments, 0, vars);
  return end === segments.length ? vars : undefined;
}

export function compareTemplates(a: PathTemplate, b: PathTemplate): number {
  for (let i = 0; i < Math.min(a.rank.length, b.rank.length); i++) {
    if (a.rank[i] !== b.rank[i]) return a.rank[i]! - b.rank[i]!;
  }
  return b.rank.length - a.rank.length;
}

function matchParts(parts: readonly Part[], segs: readonly string[], at: number, vars: Map<string, string>): number {
  let i = at;
  for (let p = 0; p < parts.length; p++) {
    const part = parts[p]!;
    switch (part.kind) {
      case "literal":
        if (segs[i] !== part.value) return -1;
        i++;
        break;
      case "one":
        if (i >= segs.length || segs[i] === "") return -1;
        i++;
        break;
      case "rest":
        // "**" is only allowed last in a template.
        i = segs.length;
        break;
      case "var": {
        const start = i;
        i = matchParts(part.parts, segs, i, vars);
        if (i < 0) return -1;
        vars.set(part.field, segs.slice(start, i).join("/"));
        break;
      }
    }
  }
  return i;
}

function simple(token: string): Part {
  if (token === "*") return { kind: "one" };
  if (token === "**") return { kind: "rest" };
  return { kind: "literal", value: token };
}

/** Splits on "/" outside braces. */
function splitTopLevel(body: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of body) {
    if (ch === "{") depth++;
    if (ch === "}") depth--;
    if (ch === "/" && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out;
}
