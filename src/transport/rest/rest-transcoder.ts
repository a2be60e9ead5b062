import {
  create,
  fromJson,
  getOption,
  hasOption,
  isMessage,
  type DescEnum,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  type JsonObject,
  type JsonValue,
  type Message,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { NodeRequest, NodeResponse } from "../node-types.js";
import { http } from "../../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../../gen/google/api/http_pb.js";
import { peerKey, principalKey } from "../../security/principal.js";
import { CallContext, CLIENT_GONE, FINISHED, headerValue } from "../call-context.js";
import type { Call, Pipeline } from "../pipeline.js";
import { traceKey } from "../trace-context.js";
import { JsonEncoder } from "../message-encoding.js";
import { etagMatches } from "../etag.js";
import { httpStatus } from "./http-status.js";
import { compareTemplates, matchPath, parsePathTemplate, type PathTemplate } from "./path-template.js";

type Req = NodeRequest;
type Res = NodeResponse;
type AnyImpl = (req: Message, ctx: CallContext) => unknown;

/** A service and the implementation the Connect router also serves. */
export interface RestBinding {
  readonly service: DescService;
  readonly impl: object;
}

interface Route {
  readonly httpMethod: string;
  readonly template: PathTemplate;
  /** "" (no body), "*" (the whole request) or a field name. */
  readonly body: string;
  readonly method: DescMethod;
  readonly service: DescService;
  readonly impl: AnyImpl;
  /** "package.Service/Method": the outcome record's method. */
  readonly procedure: string;
}

export interface RestOptions {
  readonly maxBodyBytes: number;
  readonly shutdownSignal: AbortSignal;
  /** Per-request context values (the TLS peer), as the Connect adapter gets them. */
  readonly contextValues: (req: NodeRequest) => ContextValues;
  /** The call pipeline (the guard runs in it) and the request's call in it. */
  readonly pipeline: Pipeline;
  readonly callOf: (req: NodeRequest) => Call;
}

export type RestTranscoder = (req: NodeRequest, res: NodeResponse) => Promise<void>;

/**
 * The REST/JSON transcoder, driven only by the google.api.http options in
 * the generated descriptors, following grpc-gateway: the body first, then
 * path variables, then the query string (never with body "*"); repeated
 * fields as repeated keys, nested fields dotted, maps as m[k]=v, unknown
 * query keys ignored. Responses are proto3 JSON with implicit fields
 * emitted; errors are {"code","message","details"} with grpc-gateway's
 * status table; server streams are newline-delimited {"result":...} lines.
 */
export function createRestTranscoder(bindings: readonly RestBinding[], opts: RestOptions): RestTranscoder {
  const routes = buildRoutes(bindings);

  return async function handle(req: Req, res: Res): Promise<void> {
    const call = opts.callOf(req);
    const fail = (err: unknown, status?: number) => {
      call.code = ConnectError.from(err).code;
      sendError(res, err, status);
    };
    const url = new URL(req.url ?? "/", "http://localhost");
    const verbAt = url.pathname.lastIndexOf(":");
    const hasVerb = verbAt > url.pathname.lastIndexOf("/");
    const path = hasVerb ? url.pathname.slice(0, verbAt) : url.pathname;
    const verb = hasVerb ? url.pathname.slice(verbAt + 1) : "";
    let segments: string[];
    try {
      segments = path.slice(1).split("/").map(decodeURIComponent);
    } catch {
      return fail(new ConnectError("path: malformed percent-encoding", Code.InvalidArgument));
    }
    const method = (req.method ?? "GET").toUpperCase();
    const lookup = method === "HEAD" ? "GET" : method;

    const allowed = new Set<string>();
    for (const route of routes) {
      const vars = matchPath(route.template, segments, verb);
      if (!vars) continue;
      if (route.httpMethod !== lookup) {
        allowed.add(route.httpMethod);
        continue;
      }
      call.method = route.procedure;
      try {
        const input = await buildRequest(route, vars, queryParameters(url.search), req, opts.maxBodyBytes);
        await invoke(route, input, req, res, call, opts);
        call.code = 0;
      } catch (err) {
        // A body over MAX_BODY_BYTES can never succeed: 413, not 429 (a
        // client that retries on 429 would resend it forever); an over-long
        // query string is 414.
        fail(err, (err as { [HTTP_STATUS]?: number })[HTTP_STATUS]);
      }
      return;
    }
    if (allowed.size > 0) {
      res.setHeader("allow", [...allowed].join(", "));
      return fail(new ConnectError(`method ${method} not allowed on ${path}`, Code.Unimplemented), 405);
    }
    fail(new ConnectError(`no route for ${method} ${path.slice(0, 200)}`, Code.NotFound));
  };
}

function buildRoutes(bindings: readonly RestBinding[]): Route[] {
  const routes: Route[] = [];
  for (const { service, impl } of bindings) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      const fn = (impl as Record<string, unknown>)[method.localName];
      if (typeof fn !== "function") continue;
      const rule = getOption(method, http);
      for (const r of [rule, ...rule.additionalBindings]) {
        const { httpMethod, path } = patternOf(r, method);
        routes.push({
          httpMethod,
          template: parsePathTemplate(path),
          body: r.body,
          method,
          service,
          impl: fn.bind(impl) as AnyImpl,
          procedure: `${service.typeName}/${method.name}`,
        });
      }
    }
  }
  return routes.sort((a, b) => compareTemplates(a.template, b.template));
}

function patternOf(rule: HttpRule, method: DescMethod): { httpMethod: string; path: string } {
  switch (rule.pattern.case) {
    case "get":
    case "put":
    case "post":
    case "delete":
    case "patch":
      return { httpMethod: rule.pattern.case.toUpperCase(), path: rule.pattern.value };
    case "custom":
      return { httpMethod: rule.pattern.value.kind.toUpperCase(), path: rule.pattern.value.path };
    default:
      throw new Error(`${method.toString()}: google.api.http rule has no pattern`);
  }
}

async function buildRequest(
  route: Route,
  vars: Map<string, string>,
  query: ReadonlyMap<string, readonly string[]>,
  req: Req,
  maxBodyBytes: number,
): Promise<Message> {
  const schema = route.method.input;
  let json: JsonObject = {};
  const bound = new Set<string>();
  if (route.body !== "") {
    const body = await readJsonBody(req, maxBodyBytes);
    if (route.body === "*") {
      if (body !== undefined && (body === null || typeof body !== "object" || Array.isArray(body))) {
        throw new ConnectError("body: must be a JSON object", Code.InvalidArgument);
      }
      json = (body as JsonObject | undefined) ?? {};
    } else if (body !== undefined) {
      json[route.body] = body;
      bound.add(route.body);
    }
  }
  for (const [fieldPath, raw] of vars) {
    setPath(json, schema, fieldPath.split("."), [raw], fieldPath);
    bound.add(fieldPath);
  }
  if (route.body !== "*" && query.size > 0) {
    const boundPrefixes = [...bound].map((b) => `${b}.`);
    for (const [key, values] of query) {
      const map = /^([A-Za-z0-9_.]+)\[(.*)\]$/.exec(key);
      if (map) {
        setMapEntry(json, schema, map[1]!.split("."), map[2]!, values[0]!, key);
        continue;
      }
      if (bound.has(key) || boundPrefixes.some((b) => key.startsWith(b))) continue;
      setPath(json, schema, key.split("."), values, key);
    }
  }
  try {
    return fromJson(schema, json, { ignoreUnknownFields: true });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const field = locateJsonError(schema, json);
    throw new ConnectError(field ? `${field}: ${reason}` : reason, Code.InvalidArgument);
  }
}

/**
 * protobuf-es names the field for most errors, but not inside well-known
 * types ("cannot decode message google.protobuf.Duration"); decoding key by
 * key finds the field path the client needs to see.
 */
function locateJsonError(schema: DescMessage, json: JsonValue, prefix = ""): string | undefined {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return undefined;
  for (const [key, value] of Object.entries(json)) {
    const field = findField(schema, key);
    if (!field) continue;
    try {
      fromJson(schema, { [key]: value }, { ignoreUnknownFields: true });
    } catch {
      const path = `${prefix}${field.name}`;
      if (field.fieldKind === "message" && !field.message.typeName.startsWith("google.protobuf.")) {
        return locateJsonError(field.message, value, `${path}.`) ?? path;
      }
      return path;
    }
  }
  return undefined;
}

/** Answers are proto3 JSON with implicit fields; the JSON of messages marked immutable is cached on them. */
const json = new JsonEncoder({ alwaysEmitImplicit: true });

async function invoke(route: Route, input: Message, req: Req, res: Res, call: Call, opts: RestOptions): Promise<void> {
  const ctx = new CallContext({
    service: route.service,
    method: route.method,
    protocolName: "rest",
    requestMethod: req.method ?? "GET",
    url: req.url ?? "/",
    headers: req.headers,
    timeoutMs: undefined,
    shutdown: opts.shutdownSignal,
    values: opts.contextValues(req),
    requestId: call.requestId,
  });
  const onClose = () => ctx.abort(CLIENT_GONE);
  res.once("close", onClose);
  try {
    await opts.pipeline.admit(call, {
      service: route.service.typeName,
      method: route.method.name,
      header: ctx.rawHeader,
      peer: ctx.values.get(peerKey),
      message: input,
    });
    ctx.values.set(principalKey, call.principal!);
    ctx.values.set(traceKey, call);
    const output = route.method.output;
    if (route.method.methodKind === "server_streaming") {
      await stream(route.impl(input, ctx) as AsyncIterable<Message>, output, res);
      return;
    }
    const result = (await route.impl(input, ctx)) as Message;
    // Headers the handler set go out as they are; one it sets, `etag`, also
    // makes a GET conditional: If-None-Match naming it answers 304, no body.
    const headers: Record<string, string> = {};
    ctx.touchedResponseHeader?.forEach((v, k) => (headers[k] = v));
    if (headers.etag !== undefined && (req.method === "GET" || req.method === "HEAD")) {
      if (etagMatches(headerValue(req.headers, "if-none-match"), headers.etag)) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
    }
    const message = isMessage(result, output) ? result : create(output, result);
    const body = json.stringify(output, message);
    headers["content-type"] = "application/json";
    headers["content-length"] = String(Buffer.byteLength(body));
    res.writeHead(200, headers);
    res.end(body);
  } finally {
    res.off("close", onClose);
    ctx.abort(FINISHED);
  }
}

async function stream(source: AsyncIterable<Message>, output: DescMessage, res: Res): Promise<void> {
  const it = source[Symbol.asyncIterator]();
  const first = it.next();
  // Request validation runs synchronously on the first next(), so a bad
  // request has rejected by the time the microtasks have run: it gets a
  // plain error response. Otherwise the stream is accepted and its headers
  // go out at once, before the first event.
  const settled = await Promise.race([
    first.then(
      () => true,
      () => true,
    ),
    new Promise<false>((resolve) => setImmediate(() => resolve(false))),
  ]);
  if (settled) await first;
  res.writeHead(200, { "content-type": "application/x-ndjson" });
  if ("flushHeaders" in res) res.flushHeaders();
  try {
    for (let step = await first; !step.done; step = await it.next()) {
      const line = `{"result":${json.stringify(output, step.value)}}`;
      if (!res.write(`${line}\n`)) await new Promise((resolve) => res.once("drain", resolve));
    }
    res.end();
  } catch (err) {
    const e = ConnectError.from(err);
    res.end(`${JSON.stringify({ error: { code: e.code, message: e.rawMessage, details: [] } })}\n`);
  }
}

export function sendError(res: Res, err: unknown, status?: number): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const e = ConnectError.from(err);
  const body = JSON.stringify({ code: e.code, message: e.rawMessage, details: [] });
  const headers: Record<string, string> = { "content-type": "application/json" };
  // Headers a REST client acts on (grpc-gateway forwards them the same way).
  for (const name of ["www-authenticate", "retry-after"]) {
    const value = e.metadata.get(name);
    if (value !== null) headers[name] = value;
  }
  res.writeHead(status ?? httpStatus(e.code), headers);
  res.end(body);
}

async function readJsonBody(req: Req, maxBytes: number): Promise<JsonValue | undefined> {
  const length = Number(req.headers["content-length"] ?? "0");
  if (length > maxBytes) throw bodyTooLarge(maxBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw bodyTooLarge(maxBytes);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as JsonValue;
  } catch (err) {
    throw new ConnectError(`body: malformed JSON: ${(err as Error).message}`, Code.InvalidArgument);
  }
}

/** An HTTP status other than the code's own, carried on the error (413, 414; see handle). */
const HTTP_STATUS = Symbol("http status");

function withStatus(e: ConnectError, status: number): ConnectError {
  (e as ConnectError & { [HTTP_STATUS]?: number })[HTTP_STATUS] = status;
  return e;
}

function bodyTooLarge(maxBytes: number): ConnectError {
  return withStatus(new ConnectError(`body: larger than ${maxBytes} bytes (MAX_BODY_BYTES)`, Code.ResourceExhausted), 413);
}

// --- the query string --------------------------------------------------------

/**
 * Bounds on the query string, checked before anything else reads it (the
 * transcoder runs before the guard, so this is work an unauthenticated
 * client can ask for). No RPC needs more: a Discover with every capability
 * and tag the validators allow is under 4 KiB and 33 parameters.
 */
export const MAX_QUERY_LENGTH = 8192;
export const MAX_QUERY_PARAMETERS = 256;

/**
 * The query string as key → values in first-appearance order, in one pass
 * over the parameters (a per-key getAll() was quadratic in distinct keys:
 * 13k keys cost ~0.5 s of CPU). Longer than MAX_QUERY_LENGTH: 414;
 * more than MAX_QUERY_PARAMETERS parameters: 400; both INVALID_ARGUMENT.
 */
export function queryParameters(search: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (search.length <= 1) return out;
  if (search.length - 1 > MAX_QUERY_LENGTH) {
    const e = new ConnectError(`query: longer than ${MAX_QUERY_LENGTH} characters`, Code.InvalidArgument);
    throw withStatus(e, 414);
  }
  let count = 0;
  for (const [key, value] of new URLSearchParams(search)) {
    if (++count > MAX_QUERY_PARAMETERS) {
      throw new ConnectError(`query: more than ${MAX_QUERY_PARAMETERS} parameters`, Code.InvalidArgument);
    }
    const values = out.get(key);
    if (values) values.push(value);
    else out.set(key, [value]);
  }
  return out;
}

// --- setting fields from path variables and query parameters ---------------

function findField(schema: DescMessage, name: string): DescField | undefined {
  return schema.fields.find((f) => f.name === name || f.jsonName === name);
}

/** Walks to the field named by `path` and sets it from string values. */
function setPath(json: JsonObject, schema: DescMessage, path: string[], raw: readonly string[], key: string): void {
  let obj = json;
  let desc = schema;
  for (let i = 0; i < path.length; i++) {
    const field = findField(desc, path[i]!);
    if (!field) return; // unknown query keys are ignored, as grpc-gateway does
    const existing = obj[field.name] ?? obj[field.jsonName];
    delete obj[field.jsonName];
    if (i < path.length - 1) {
      if (field.fieldKind !== "message") return;
      const next: JsonObject =
        existing !== null && typeof existing === "object" && !Array.isArray(existing) ? existing : {};
      obj[field.name] = next;
      obj = next;
      desc = field.message;
      continue;
    }
    obj[field.name] = fieldValue(field, raw, key);
  }
}

function setMapEntry(json: JsonObject, schema: DescMessage, path: string[], mapKey: string, raw: string, key: string) {
  let obj = json;
  let desc = schema;
  for (let i = 0; i < path.length; i++) {
    const field = findField(desc, path[i]!);
    if (!field) return;
    const existing = obj[field.name] ?? obj[field.jsonName];
    delete obj[field.jsonName];
    const next: JsonObject =
      existing !== null && typeof existing === "object" && !Array.isArray(existing) ? existing : {};
    obj[field.name] = next;
    if (i === path.length - 1) {
      if (field.fieldKind !== "map") throw new ConnectError(`${key}: ${field.name} is not a map`, Code.InvalidArgument);
      next[mapKey] =
        field.mapKind === "enum" ? enumJson(field.enum, raw, key) : field.mapKind === "scalar" ? scalarJson(field.scalar, raw, key) : raw;
      return;
    }
    if (field.fieldKind !== "message") return;
    obj = next;
    desc = field.message;
  }
}

function fieldValue(field: DescField, raw: readonly string[], key: string): JsonValue {
  switch (field.fieldKind) {
    case "list":
      return raw.map((r) =>
        field.listKind === "scalar"
          ? scalarJson(field.scalar, r, key)
          : field.listKind === "enum"
            ? enumJson(field.enum, r, key)
            : messageJson(field.message, r, key),
      );
    case "scalar":
      return scalarJson(field.scalar, last(raw), key);
    case "enum":
      return enumJson(field.enum, last(raw), key);
    case "message":
      return messageJson(field.message, last(raw), key);
    case "map":
      throw new ConnectError(`${key}: set map entries as ${key}[key]=value`, Code.InvalidArgument);
  }
}

function last(raw: readonly string[]): string {
  return raw[raw.length - 1]!;
}

/** ScalarType.BOOL is 8; every other scalar's proto3 JSON form accepts a string. */
function scalarJson(scalar: number, raw: string, key: string): JsonValue {
  if (scalar !== 8) return raw;
  if (raw === "true" || raw === "1") return true;
  if (raw === "false" || raw === "0") return false;
  throw new ConnectError(`${key}: expected true or false, got "${raw.slice(0, 32)}"`, Code.InvalidArgument);
}

/**
 * An enum by name or number. Names are checked here: fromJson, told to
 * ignore unknown fields, would also drop an unknown enum name silently and
 * the filter would vanish. In a query string the name may also go without
 * the enum's shared prefix, in any case (`?scope=federated` for
 * FEDERATION_SCOPE_FEDERATED): what a person types into a URL.
 */
function enumJson(desc: DescEnum, raw: string, key: string): JsonValue {
  if (/^-?\d+$/.test(raw)) return Number(raw);
  if (desc.values.some((v) => v.name === raw)) return raw;
  // The prefix buf lint requires: the enum's name in UPPER_SNAKE_CASE.
  const prefixed = `${desc.name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()}_${raw.toUpperCase()}`;
  if (desc.values.some((v) => v.name === prefixed)) return prefixed;
  const known = desc.values.map((v) => v.name).join(", ");
  throw new ConnectError(`${key}: unknown ${desc.name} "${raw.slice(0, 64)}"; expected one of ${known}`, Code.InvalidArgument);
}

/** Well-known types whose JSON form is a string (Duration "30s", Timestamp, FieldMask, wrappers). */
const stringLike = new Set([
  "google.protobuf.Duration",
  "google.protobuf.Timestamp",
  "google.protobuf.FieldMask",
  "google.protobuf.StringValue",
  "google.protobuf.BytesValue",
  "google.protobuf.Int64Value",
  "google.protobuf.UInt64Value",
  "google.protobuf.Int32Value",
  "google.protobuf.UInt32Value",
  "google.protobuf.DoubleValue",
  "google.protobuf.FloatValue",
]);

function messageJson(message: DescMessage, raw: string, key: string): JsonValue {
  if (stringLike.has(message.typeName)) return raw;
  if (message.typeName === "google.protobuf.BoolValue") return scalarJson(8, raw, key);
  throw new ConnectError(`${key}: a ${message.typeName} cannot be set from a query parameter`, Code.InvalidArgument);
}
