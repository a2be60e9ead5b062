import { describe, expect, it } from "vitest";
import { compareTemplates, matchPath, parsePathTemplate } from "../src/transport/rest/path-template.js";

/** Splits a request path the way the transcoder does: verb after the last ":" of the last segment. */
function match(template: string, path: string) {
  const verbAt = path.lastIndexOf(":");
  const hasVerb = verbAt > path.lastIndexOf("/");
  const body = hasVerb ? path.slice(0, verbAt) : path;
  const verb = hasVerb ? path.slice(verbAt + 1) : "";
  const vars = matchPath(parsePathTemplate(template), body.slice(1).split("/"), verb);
  return vars && Object.fromEntries(vars);
}

function sortTemplates(sources: string[]): string[] {
  return sources
    .map(parsePathTemplate)
    .sort(compareTemplates)
    .map((t) => t.source);
}

describe("parsePathTemplate", () => {
  it("keeps the source and has no verb for a plain template", () => {
    const t = parsePathTemplate("/agents/discover");
    expect(t.source).toBe("/agents/discover");
    expect(t.verb).toBe("");
    expect(t.rank).toEqual([0, 0]);
  });

  it("ranks literals 0, single-segment variables 1 and ** 2, segment by segment", () => {
    expect(parsePathTemplate("/agents/{agent_id}/heartbeat").rank).toEqual([0, 1, 0]);
    expect(parsePathTemplate("/v1/{name=projects/*/things/*}").rank).toEqual([0, 0, 1, 0, 1]);
    expect(parsePathTemplate("/files/**").rank).toEqual([0, 2]);
  });

  it("splits a custom verb off the last segment", () => {
    expect(parsePathTemplate("/admin/keys:rotate").verb).toBe("rotate");
    expect(parsePathTemplate("/admin/agents/{agent_id}:share").verb).toBe("share");
    expect(parsePathTemplate("/v1/{name=operations/**}:cancel").verb).toBe("cancel");
  });

  it("does not take a colon inside a variable for a verb", () => {
    const t = parsePathTemplate("/v1/{name=a:b}");
    expect(t.verb).toBe("");
    expect(matchPath(t, ["v1", "a:b"], "")).toEqual(new Map([["name", "a:b"]]));
  });

  it("rejects a template that does not start with a slash", () => {
    expect(() => parsePathTemplate("agents/{agent_id}")).toThrow(/must start with "\/"/);
  });
});

describe("matchPath", () => {
  it("matches literal segments exactly and binds nothing", () => {
    expect(match("/agents/discover", "/agents/discover")).toEqual({});
    expect(match("/agents/discover", "/agents/discovery")).toBeUndefined();
    expect(match("/agents/discover", "/Agents/discover")).toBeUndefined();
  });

  it("binds a single-segment variable", () => {
    expect(match("/agents/{agent_id}", "/agents/a-1")).toEqual({ agent_id: "a-1" });
    expect(match("/agents/{agent_id}/heartbeat", "/agents/a-1/heartbeat")).toEqual({ agent_id: "a-1" });
  });

  it("does not let a single-segment variable match an empty or missing segment", () => {
    expect(match("/agents/{agent_id}", "/agents/")).toBeUndefined();
    expect(match("/agents/{agent_id}", "/agents")).toBeUndefined();
    expect(match("/agents/{agent_id}/heartbeat", "/agents//heartbeat")).toBeUndefined();
  });

  it("binds a dotted field path as the variable name", () => {
    expect(match("/tenants/{agent.tenant}/agents", "/tenants/acme/agents")).toEqual({ "agent.tenant": "acme" });
  });

  it("captures several segments for {name=projects/*/things/*}", () => {
    const tpl = "/v1/{name=projects/*/things/*}";
    expect(match(tpl, "/v1/projects/p1/things/t9")).toEqual({ name: "projects/p1/things/t9" });
    expect(match(tpl, "/v1/projects/p1/widgets/t9")).toBeUndefined();
    expect(match(tpl, "/v1/projects/p1/things")).toBeUndefined();
    expect(match(tpl, "/v1/projects/p1/things/t9/extra")).toBeUndefined();
  });

  it("lets a multi-segment variable be followed by literals", () => {
    expect(match("/v1/{parent=projects/*}/things", "/v1/projects/p1/things")).toEqual({ parent: "projects/p1" });
    expect(match("/v1/{parent=projects/*}/things", "/v1/projects/p1/widgets")).toBeUndefined();
  });

  it("matches ** against every remaining segment", () => {
    expect(match("/files/**", "/files/a/b/c")).toEqual({});
    expect(match("/files/{path=**}", "/files/a/b/c.txt")).toEqual({ path: "a/b/c.txt" });
    expect(match("/files/{path=docs/**}", "/files/docs/x/y")).toEqual({ path: "docs/x/y" });
    expect(match("/files/{path=docs/**}", "/files/img/x")).toBeUndefined();
  });

  it("matches a wildcard * without binding it", () => {
    expect(match("/agents/*/heartbeat", "/agents/anything/heartbeat")).toEqual({});
    expect(match("/agents/*/heartbeat", "/agents/anything/other")).toBeUndefined();
  });

  it("requires the custom verb to match exactly", () => {
    expect(match("/admin/agents/{agent_id}:share", "/admin/agents/a1:share")).toEqual({ agent_id: "a1" });
    expect(match("/admin/agents/{agent_id}:share", "/admin/agents/a1:unshare")).toBeUndefined();
    expect(match("/admin/agents/{agent_id}:share", "/admin/agents/a1")).toBeUndefined();
    expect(match("/admin/agents/{agent_id}", "/admin/agents/a1:share")).toBeUndefined();
    expect(match("/v1/{name=operations/**}:cancel", "/v1/operations/x/y:cancel")).toEqual({ name: "operations/x/y" });
  });

  it("rejects paths that are shorter, longer or under another root", () => {
    expect(match("/agents/{agent_id}/heartbeat", "/agents/a1")).toBeUndefined();
    expect(match("/agents/{agent_id}", "/agents/a1/heartbeat")).toBeUndefined();
    expect(match("/agents", "/tools")).toBeUndefined();
    expect(match("/agents", "/")).toBeUndefined();
  });
});

describe("compareTemplates", () => {
  it("sorts a literal segment before a variable in the same position", () => {
    const discover = parsePathTemplate("/agents/discover");
    const byId = parsePathTemplate("/agents/{agent_id}");
    expect(compareTemplates(discover, byId)).toBeLessThan(0);
    expect(compareTemplates(byId, discover)).toBeGreaterThan(0);
    expect(sortTemplates(["/agents/{agent_id}", "/agents/discover"])).toEqual([
      "/agents/discover",
      "/agents/{agent_id}",
    ]);
  });

  it("sorts a single-segment variable before **", () => {
    expect(sortTemplates(["/files/**", "/files/{id}", "/files/latest"])).toEqual([
      "/files/latest",
      "/files/{id}",
      "/files/**",
    ]);
  });

  it("decides on the first segment that differs, not on later ones", () => {
    // A literal at position 1 wins over a variable there even if later segments are variables.
    expect(sortTemplates(["/agents/{agent_id}/heartbeat", "/agents/discover/{x}"])).toEqual([
      "/agents/discover/{x}",
      "/agents/{agent_id}/heartbeat",
    ]);
  });

  it("puts the longer template first when one is a prefix of the other", () => {
    expect(compareTemplates(parsePathTemplate("/agents/{agent_id}"), parsePathTemplate("/agents"))).toBeLessThan(0);
  });

  it("gives the first matching template of a sorted table the literal route", () => {
    const table = ["/agents/{agent_id}", "/agents/discover", "/agents"].map(parsePathTemplate).sort(compareTemplates);
    const first = table.find((t) => matchPath(t, ["agents", "discover"], "") !== undefined);
    expect(first?.source).toBe("/agents/discover");
    const other = table.find((t) => matchPath(t, ["agents", "a-7"], "") !== undefined);
    expect(other?.source).toBe("/agents/{agent_id}");
    expect(matchPath(other!, ["agents", "a-7"], "")?.get("agent_id")).toBe("a-7");
  });
});
