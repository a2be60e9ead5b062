import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { LRUCache } from "lru-cache";
import { AgentSchema, type Agent } from "../../../gen/federation/v1/agent_pb.js";
import {
  CatalogDigestSchema,
  CatalogToolSchema,
  GetManifestResponseSchema,
  ManifestSchema,
  type CatalogDigest,
  type CatalogTool,
  type GetManifestResponse,
} from "../../../gen/federation/v1/directory_service_pb.js";
import type { Directory } from "../../directory/directory.js";
import { errors } from "../../errors.js";
import { markImmutable } from "../../message-hints.js";
import { toCatalogAgentMessage } from "../../registry/agent-message.js";
import { catalogDigest, catalogLeaf, type ManifestSigner } from "../../security/manifest-signer.js";
import { encodeToken, type ManifestRead } from "../../validation/requests.js";
import { Memo } from "../message-encoding.js";

const IMPLICIT = { alwaysEmitImplicit: true } as const;

/**
 * Agents held by the kept manifest versions, all views together. Each view
 * keeps its agents' messages (shared with other views) and, once asked for,
 * the signed full form with its cached encodings (~1.7 KB per agent per
 * protocol form): 20k agents bound that to some tens of MB.
 */
const MAX_KEPT_AGENTS = 20_000;

/** Stores that cannot tell their catalog version: the view is rebuilt at most this often (re-signed only if its digest changed). */
const UNVERSIONED_REFRESH_MS = 2_000;

/** Per manifest agent message: its catalog tools and its leaf of the catalog digest, made once. */
interface Entry {
  readonly tools: CatalogTool[];
  readonly leaf: Buffer;
}
const entries = new Memo<Entry>("manifest catalog entry");

function entryOf(agent: Agent): Entry {
  const known = entries.get(agent);
  if (known) return known;
  const tools = agent.tools.map((t) =>
    markImmutable(
      create(CatalogToolSchema, {
        agentId: agent.id,
        agentName: agent.name,
        name: t.name,
        description: t.description,
        inputSchema: t.inputSchema,
      }),
    ),
  );
  const leaf = catalogLeaf(
    toJson(AgentSchema, agent, IMPLICIT),
    tools.map((t) => toJson(CatalogToolSchema, t, IMPLICIT)),
  );
  return entries.set(agent, { tools, leaf });
}

/** One catalog version of one view (anonymous, or a tenant's), signed once. */
interface View {
  /** The store's catalog version it was built at (undefined: the store cannot tell). */
  version: string | undefined;
  checkedAt: number;
  readonly keyId: string;
  readonly name: string;
  readonly generatedAt: Timestamp;
  readonly agents: readonly Agent[];
  readonly digest: string;
  readonly etag: string;
  readonly catalog: CatalogDigest;
  readonly catalogSignature: string;
  readonly algorithm: string;
  readonly notModified: GetManifestResponse;
  full: Promise<GetManifestResponse> | undefined;
}

/**
 * The manifest, built and signed once per catalog version and view: the
 * store's catalog version (a counter on the memory store) says when what
 * the manifest shows changed, so a request while it has not is a lookup.
 * Each version has a catalog digest (signed when the version is built) and
 * its etag; the full form is signed as one document the first time it is
 * asked for, and kept (marked immutable, so the transports encode it once);
 * pages are slices of the version's agent messages.
 */
export class ManifestCatalog {
  private readonly views = new LRUCache<string, View>({
    max: 1_000,
    maxSize: MAX_KEPT_AGENTS,
    sizeCalculation: (v) => v.agents.length + 1,
  });
  private readonly building = new Map<string, { version: string | undefined; view: Promise<View> }>();

  constructor(
    private readonly directory: Directory,
    private readonly signer: ManifestSigner,
  ) {}

  /** The current version of the view: anonymous (undefined) or a tenant's. */
  async view(tenant: string | undefined): Promise<View> {
    const key = tenant === undefined ? "" : `t:${tenant}`;
    const version = this.directory.catalogVersion(tenant);
    const keyId = this.signer.signingKeyId();
    const known = this.views.get(key);
    if (known && known.keyId === keyId) {
      if (version !== undefined ? known.version === version : Date.now() - known.checkedAt < UNVERSIONED_REFRESH_MS) {
        return known;
      }
    }
    // One build per view and version at a time; a request that saw a newer
    // version starts its own, so a caller reads its own writes.
    const pending = this.building.get(key);
    if (pending && pending.version === version && version !== undefined) return pending.view;
    const view = this.build(tenant, version, known).then(
      (v) => {
        if (this.building.get(key)?.view === view) this.building.delete(key);
        this.views.set(key, v);
        return v;
      },
      (err: unknown) => {
        if (this.building.get(key)?.view === view) this.building.delete(key);
        throw err;
      },
    );
    this.building.set(key, { version, view });
    return view;
  }

  /** The full form: the whole manifest, its signature as before, and the catalog digest. */
  full(view: View): Promise<GetManifestResponse> {
    view.full ??= this.signFull(view).catch((err: unknown) => {
      view.full = undefined;
      throw err;
    });
    return view.full;
  }

  /** One page of the version: up to `read.size` agents from the token's offset, their tools, the catalog. */
  page(view: View, read: ManifestRead): GetManifestResponse {
    let start = 0;
    if (read.after) {
      if (read.after.digest !== view.digest) throw errors.manifestChanged();
      if (read.after.offset > view.agents.length) throw errors.invalidArgument("page_token", "is not a token this server issued");
      start = read.after.offset;
    }
    const agents = view.agents.slice(start, start + read.size);
    const end = start + agents.length;
    return create(GetManifestResponseSchema, {
      // Marked, as its agents and tools are: the encoders then write those
      // from their cached encodings instead of encoding the page in full.
      manifest: markImmutable(
        create(ManifestSchema, {
          name: view.name,
          generatedAt: view.generatedAt,
          agents,
          tools: agents.flatMap((a) => entryOf(a).tools),
        }),
      ),
      signatureAlgorithm: view.algorithm,
      keyId: view.keyId,
      etag: view.etag,
      nextPageToken: end < view.agents.length ? encodeToken([view.digest, end]) : "",
      catalog: view.catalog,
      catalogSignature: view.catalogSignature,
    });
  }

  private async build(tenant: string | undefined, version: string | undefined, previous: View | undefined): Promise<View> {
    const keyId = this.signer.signingKeyId();
    const m = await this.directory.manifest(tenant);
    const agents = m.agents.map(toCatalogAgentMessage);
    const digest = catalogDigest(agents.map((a) => entryOf(a).leaf));
    if (previous && previous.digest === digest && previous.keyId === keyId && previous.name === m.name) {
      // Nothing shown changed (a store without versions, or a change undone): keep its signatures.
      previous.version = version;
      previous.checkedAt = Date.now();
      return previous;
    }
    const generatedAt = timestampFromMs(m.generatedAt);
    const catalog = markImmutable(
      create(CatalogDigestSchema, { name: m.name, generatedAt, agentCount: agents.length, digest }),
    );
    const sig = await this.signer.sign(toJson(CatalogDigestSchema, catalog, IMPLICIT));
    const etag = `W/"${digest}"`;
    return {
      version,
      checkedAt: Date.now(),
      keyId: sig.keyId || keyId,
      name: m.name,
      generatedAt,
      agents,
      digest,
      etag,
      catalog,
      catalogSignature: sig.signature,
      algorithm: sig.algorithm,
      notModified: markImmutable(create(GetManifestResponseSchema, { etag, notModified: true })),
      full: undefined,
    };
  }

  private async signFull(view: View): Promise<GetManifestResponse> {
    const manifest = create(ManifestSchema, {
      name: view.name,
      generatedAt: view.generatedAt,
      agents: [...view.agents],
      tools: view.agents.flatMap((a) => entryOf(a).tools),
    });
    const sig = await this.signer.sign(toJson(ManifestSchema, manifest, IMPLICIT));
    return markImmutable(
      create(GetManifestResponseSchema, {
        manifest,
        signature: sig.signature,
        signatureAlgorithm: sig.algorithm,
        keyId: sig.keyId,
        etag: view.etag,
        catalog: view.catalog,
        catalogSignature: view.catalogSignature,
      }),
    );
  }
}
