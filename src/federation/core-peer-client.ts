import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { JSONWebKeySet } from "jose";
import type { Agent } from "../../gen/federation/v1/agent_pb.js";
import { DirectoryService, ManifestSchema, type ToolEntry } from "../../gen/federation/v1/directory_service_pb.js";
import { PeerProblem } from "../../gen/federation/v1/event_pb.js";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { FederationScope } from "../../gen/federation/v1/origin_pb.js";
import { RouterService, type RouteResponse } from "../../gen/federation/v1/router_service_pb.js";
import { verifyManifest } from "../security/manifest-signer.js";
import { INSTANCE_HEADER, TICKET_HEADER, isInstanceId } from "./hop-headers.js";
import {
  NoisyAnswer,
  PeerCheckFailed,
  type PeerCall,
  type PeerClient,
  type PeerIdentity,
  type RemoteDiscover,
  type RemoteRoute,
  type RemoteSearch,
} from "./peer-client.js";
import type { PeerSpec } from "./peer-spec.js";

/** Largest answer read from a peer (a full manifest of 10k agents fits). */
const READ_MAX_BYTES = 32 * 1024 * 1024;

/**
 * Another Federation Core, spoken to with our own generated DirectoryService
 * client over one HTTP/2 session per peer (h2c for http://): federated reads
 * (Discover, SearchTools) in gRPC, the checks (JWKS, manifest) and forwarded
 * Routes in the Connect protocol, binary. Every request carries the token the peer minted for
 * us; the peer scopes its answers to that token's tenant.
 */
export class CorePeerClient implements PeerClient {
  private readonly sessions: Http2SessionManager;
  private readonly client: Client<typeof DirectoryService>;
  /** The same session, reading answers to federated reads of `maxAnswerBytes` at most. */
  private readonly reads: Client<typeof DirectoryService>;
  /** Forwarded Routes (cross-federation dispatch), on the same session. */
  private readonly router: Client<typeof RouterService>;

  constructor(
    private readonly spec: PeerSpec,
    maxAnswerBytes = READ_MAX_BYTES,
  ) {
    this.sessions = new Http2SessionManager(spec.url, { idleConnectionTimeoutMs: 60_000 });
    // No gzip asked for: a peer's answers (at most FEDERATION_MAX_ANSWER_BYTES) are small next to
    // what compressing them there and inflating them here adds to every cold federated read.
    const transport = (readMaxBytes: number) =>
      createConnectTransport({
        baseUrl: spec.url,
        httpVersion: "2",
        useBinaryFormat: true,
        sessionManager: this.sessions,
        readMaxBytes,
        acceptCompression: [],
      });
    this.client = createClient(DirectoryService, transport(READ_MAX_BYTES));
    // Federated reads over gRPC on the same session: a peer serves a gRPC Discover on its lean path
    // at well under half the CPU of a Connect one (bench/run.ts --only=federation, the cold row).
    this.reads = createClient(
      DirectoryService,
      createGrpcTransport({
        baseUrl: spec.url,
        sessionManager: this.sessions,
        readMaxBytes: Math.min(maxAnswerBytes, READ_MAX_BYTES),
        acceptCompression: [],
      }),
    );
    this.router = createClient(RouterService, transport(READ_MAX_BYTES));
  }

  /**
   * Reads the peer's JWKS and its full manifest and checks the manifest's
   * detached JWS against that key set, as any third party would
   * (verifyManifest). HMAC-signed and unsigned manifests cannot be checked
   * by a third party and are refused.
   */
  async verify(signal: AbortSignal): Promise<PeerIdentity> {
    const headers = this.auth();
    let instanceId = "";
    let jwks: JSONWebKeySet;
    let answer;
    try {
      const keys = await this.client.getJwks({}, { signal, headers });
      jwks = { keys: keys.keys as unknown as JSONWebKeySet["keys"] };
      answer = await this.client.getManifest(
        {},
        { signal, headers, onHeader: (h) => void (instanceId = h.get(INSTANCE_HEADER) ?? "") },
      );
    } catch (err) {
      throw new PeerCheckFailed("unreachable", `cannot read its JWKS and manifest: ${(err as Error).message}`);
    }
    if (answer.signatureAlgorithm !== "EdDSA" || answer.signature === "") {
      throw new PeerCheckFailed(
        "untrusted",
        answer.signature === ""
          ? "its manifest is not signed (the peer runs with MANIFEST_SIGNING=none)"
          : `its manifest is signed with ${answer.signatureAlgorithm || "an unnamed algorithm"}, which its JWKS cannot verify (the peer needs MANIFEST_SIGNING=jws)`,
        PeerProblem.UNSIGNED,
      );
    }
    const ok = await verifyManifest(
      {
        manifest: answer.manifest ? toJson(ManifestSchema, answer.manifest, { alwaysEmitImplicit: true }) : {},
        signature: answer.signature,
        signatureAlgorithm: answer.signatureAlgorithm,
      },
      { jwks },
    );
    if (!ok) {
      throw new PeerCheckFailed(
        "untrusted",
        `its manifest signature (key "${answer.keyId.slice(0, 64)}") does not verify against its JWKS at /.well-known/jwks.json`,
      );
    }
    return { instanceId: isInstanceId(instanceId) ? instanceId : "", keyId: answer.keyId, jwks };
  }

  async discover(q: RemoteDiscover, call: PeerCall): Promise<Agent[]> {
    const res = await this.reads
      .discover(
        { capabilities: [...q.capabilities], tags: [...q.tags], status: q.statuses.length === 1 ? q.statuses[0] : 0, limit: q.limit, scope: q.scope },
        { signal: call.signal, timeoutMs: call.timeoutMs, headers: { ...this.auth(), ...call.hopHeaders } },
      )
      .catch(oversized);
    return res.agents;
  }

  async searchTools(q: RemoteSearch, call: PeerCall): Promise<ToolEntry[]> {
    const res = await this.reads.searchTools(
      {
        query: q.text,
        capabilities: [...q.capabilities],
        tags: [...q.tags],
        labels: [...q.labels],
        healthyOnly: q.healthyOnly,
        pageSize: q.limit,
        providerPageSize: q.providerPageSize,
        scope: q.scope,
      },
      { signal: call.signal, timeoutMs: call.timeoutMs, headers: { ...this.auth(), ...call.hopHeaders } },
    ).catch(oversized);
    return res.tools;
  }

  async route(q: RemoteRoute, call: PeerCall): Promise<RouteResponse> {
    return this.router.route(
      {
        capabilities: [...q.capabilities],
        task: q.task,
        dispatch: true,
        taskId: q.taskId,
        timeout: durationFromMs(q.timeoutMs),
        strategy: q.strategy,
        scope: FederationScope.LOCAL,
      },
      { signal: call.signal, timeoutMs: call.timeoutMs, headers: { ...this.auth(), ...call.hopHeaders, [TICKET_HEADER]: q.ticket } },
    );
  }

  close(): void {
    this.sessions.abort();
  }

  private auth(): Record<string, string> {
    return { authorization: `Bearer ${this.spec.token}` };
  }
}

/** Our transport refusing an answer over readMaxBytes is the peer's oversized answer; anything else is passed on. */
function oversized(err: unknown): never {
  const e = ConnectError.from(err);
  if (e.code === Code.ResourceExhausted && /readMaxBytes/.test(e.rawMessage)) {
    throw new NoisyAnswer(PeerProblem.OVERSIZED, `an oversized answer: ${e.rawMessage}`);
  }
  throw err;
}
