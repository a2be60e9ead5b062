import type { ConnectRouter } from "@connectrpc/connect";
import { DirectoryService } from "../gen/federation/v1/directory_service_pb.js";
import { HealthService } from "../gen/federation/v1/health_service_pb.js";
import { RegistryService } from "../gen/federation/v1/registry_service_pb.js";
import { RouterService } from "../gen/federation/v1/router_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { systemClock, type Clock } from "./clock.js";
import { loadTlsMaterial, type Config } from "./config.js";
import { Directory } from "./directory/directory.js";
import { CatalogFeed } from "./directory/catalog-feed.js";
import type { EventBus } from "./events/event-bus.js";
import { MemoryEventBus } from "./events/memory-event-bus.js";
import { HealthMonitor } from "./health/health.js";
import { createLogger, type Logger } from "./logger.js";
import type { AgentStore } from "./registry/agent-store.js";
import { LeaseReaper } from "./registry/lease-reaper.js";
import { MemoryAgentStore } from "./registry/memory-agent-store.js";
import { Registry } from "./registry/registry.js";
import { Router, type RoutingOptions } from "./router/router.js";
import { Dispatcher } from "./dispatch/dispatcher.js";
import { AddressGuard, type Lookup } from "./dispatch/address-guard.js";
import { RouteTickets } from "./dispatch/route-ticket.js";
import { createTaskStore, type TaskStore } from "./dispatch/task-store.js";
import { createOutcomeSharing } from "./router/outcome-sharing.js";
import { ContextServer } from "./router/context-hints.js";
import { FleetTelemetry } from "./health/telemetry.js";
import type { RestBinding } from "./transport/rest/rest-transcoder.js";
import { CorsPolicy } from "./transport/cors.js";
import { FanOut } from "./transport/fan-out.js";
import { guardLink, logLink, Pipeline } from "./transport/pipeline.js";
import { traceLink } from "./transport/trace-context.js";
import { Metrics } from "./health/metrics.js";
import { noProbeObserver, noProbes, ProbeScheduler, type Probes } from "./health/probes.js";
import { RedisLeaderLease, SoleProber } from "./health/probes-leader.js";
import { noSlos, SloEngine, type Slos } from "./health/slo.js";
import { noRemediation, PraetorianGuard, type Remediation } from "./health/remediation.js";
import { AlertRedisConnection, RedisFiringAlerts, RedisRemediationLedger } from "./health/alert-state.js";
import { HttpJsonClient } from "./dispatch/agent-clients.js";
import { randomUUID } from "node:crypto";
import { FederationServer } from "./transport/server.js";
import { directoryService } from "./transport/services/directory-service.js";
import { grpcHealthService } from "./transport/services/grpc-health-service.js";
import { ServerReflection, ServerReflectionV1Alpha, reflectionServices } from "./transport/services/reflection-service.js";
import { healthService } from "./transport/services/health-service.js";
import { registryService } from "./transport/services/registry-service.js";
import { agentCardRoute } from "./transport/agent-card-route.js";
import { CardFetcher } from "./a2a/card-fetch.js";
import { routerService } from "./transport/services/router-service.js";
import { WebSocketBridge } from "./transport/websocket-bridge.js";
import { dashboardRoutes } from "./transport/dashboard-route.js";
import { CatalogWatch } from "./mcp/catalog-watch.js";
import { FederatedTools } from "./mcp/federated-tools.js";
import { McpEndpoint } from "./mcp/mcp-endpoint.js";
import { AdminService } from "../gen/federation/v1/admin_service_pb.js";
import { adminService } from "./transport/services/admin-service.js";
import { FederationService } from "../gen/federation/v1/federation_service_pb.js";
import { Federation } from "./federation/federation.js";
import { federationService } from "./transport/services/federation-service.js";
import type { ServerOptions } from "./transport/server.js";
import { FileKeyStore, type KeyStore } from "./security/key-store.js";
import { TokenIssuer } from "./security/token-issuer.js";
import { TokenVerifier } from "./security/token-verifier.js";
import { RequestGuard } from "./security/request-guard.js";
import { RateLimits } from "./security/rate-limits.js";
import { ManifestSigner } from "./security/manifest-signer.js";
import { bootstrapToken } from "./security/bootstrap-token.js";

export const VERSION = "0.1.0";
/** How long the MCP endpoint lets catalog changes settle before it sends tools/list_changed. */
const MCP_LIST_CHANGED_DEBOUNCE_MS = 200;

/** The security components, prepared before the app is built (key loading is asynchronous). */
interface SecurityParts {
  readonly keys: KeyStore;
  readonly issuer: TokenIssuer;
  readonly guard: RequestGuard;
  readonly limits: RateLimits;
  readonly signer: ManifestSigner;
  readonly tls: ServerOptions["tls"];
}

export interface AppDeps {
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Storage adapters; the embedded (memory) ones when not given. */
  readonly store?: AgentStore;
  readonly bus?: EventBus;
  /** How dispatch resolves agent host names (the system resolver when not given; tests inject one). */
  readonly dispatchLookup?: Lookup;
  /** Reputation and circuit breaker tunables (tests shorten the cool-down and half-life); over the config's. */
  readonly routing?: RoutingOptions;
  /** Recent tasks for GetTask (Redis when configured, else memory). */
  readonly tasks?: TaskStore;
}

/**
 * The composition root: builds the domains over the storage ports and hands
 * them to the transport. Nothing else wires components together.
 */
export class App {
  readonly log: Logger;
  readonly clock: Clock;
  readonly store: AgentStore;
  readonly bus: EventBus;
  readonly registry: Registry;
  readonly reaper: LeaseReaper;
  readonly router: Router;
  readonly dispatcher: Dispatcher;
  private readonly tasks: TaskStore;
  readonly telemetry: FleetTelemetry;
  readonly directory: Directory;
  /** Peers (remote registries) and federated reads; held in this process's memory. */
  readonly federation: Federation;
  /** Keeps the tool catalog current for a store that does not keep its own (MongoDB). */
  private readonly catalogFeed: CatalogFeed | undefined;
  readonly health: HealthMonitor;
  readonly bridge: WebSocketBridge;
  /** The federation as one MCP server at /mcp. */
  readonly mcp: McpEndpoint;
  readonly server: FederationServer;
  readonly pipeline: Pipeline;
  /** Prometheus metrics (GET /metrics); undefined with METRICS=off. */
  readonly metrics: Metrics | undefined;
  /** Capability probes (PROBES=on; with Redis, only the replica holding the lease probes). */
  readonly probes: Probes;
  /** SLOs and burn-rate alerts (SLO=on; only the probe leader alerts). */
  readonly slo: Slos;
  /** The Praetorian Guard: firing alerts become remediation tasks (SLO=on, REMEDIATION=on). */
  readonly remediation: Remediation;
  readonly keys: KeyStore;
  private readonly limits: RateLimits;
  port = 0;

  /** Loads (or creates) the signing keys, then builds the app. */
  static async create(config: Config, deps: AppDeps = {}): Promise<App> {
    const clock = deps.clock ?? systemClock;
    const log = deps.logger ?? createLogger(config.logLevel);
    const store = deps.store ?? (await createStore(config, log));
    const bus = deps.bus ?? (await createBus(config, clock, log));
    const d = config.dispatch;
    const retention = { maxTasks: d.taskRetention, maxBytes: d.taskRetentionBytes, ttlMs: d.taskRetentionMs };
    const tasks = deps.tasks ?? (await createTaskStore(config.redis, retention, log.child({ component: "tasks" })));
    const sharing = await createOutcomeSharing(config, config.routing.reputation.halfLifeMs, log.child({ component: "reputation" }));
    const routing = { ...sharing, ...deps.routing };
    return new App(config, { ...deps, clock, logger: log, store, bus, tasks, routing }, await prepareSecurity(config, clock, log));
  }

  private constructor(
    readonly config: Config,
    deps: AppDeps,
    security: SecurityParts,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger ?? createLogger(config.logLevel);
    this.store = deps.store!;
    this.bus = deps.bus!;
    this.telemetry = new FleetTelemetry(this.bus, config.replicaId, config.telemetryIntervalMs);

    this.registry = new Registry(
      this.store,
      this.bus,
      this.clock,
      config.lease,
      this.log.child({ component: "registry" }),
      this.telemetry,
    );
    this.reaper = new LeaseReaper(this.registry, config.lease.reaperIntervalMs, this.log.child({ component: "reaper" }));
    this.router = new Router(this.store, this.bus, this.clock, this.log.child({ component: "router" }), this.telemetry, {
      replicaId: config.replicaId,
      shareIntervalMs: config.routing.shareIntervalMs,
      // Through dispatch's SSRF guard: the URL is configuration, but the same rules keep it honest.
      context: config.routing.contextServer
        ? new ContextServer(
            config.routing.contextServer,
            new AddressGuard({ loopback: config.dispatch.allowLoopback, private: config.dispatch.allowPrivate }, deps.dispatchLookup),
            this.log.child({ component: "context-server" }),
          )
        : undefined,
      ...deps.routing,
      reputation: { ...config.routing.reputation, ...deps.routing?.reputation },
      breakers: { ...config.routing.breakers, ...deps.routing?.breakers },
    });
    this.tasks = deps.tasks!;
    this.dispatcher = new Dispatcher(
      config.dispatch,
      new RouteTickets(security.keys, this.clock, { issuer: config.security.issuer, ttlMs: config.dispatch.ticketTtlMs }),
      this.tasks,
      this.bus,
      this.clock,
      this.log.child({ component: "dispatch" }),
      { lookup: deps.dispatchLookup, outcomes: this.router.outcomes },
    );
    // The distinct tool catalog: the memory store keeps its own; a shared
    // store's is built here from the store and kept current from the events.
    const ownCatalog = this.store.toolCatalog?.();
    this.catalogFeed = ownCatalog ? undefined : new CatalogFeed(this.store, this.bus, this.log.child({ component: "tool-catalog" }));
    const feed = this.catalogFeed;
    this.directory = new Directory(this.store, this.clock, config.federationName, ownCatalog ?? feed!.catalog, () => feed?.ready ?? true);
    const f = config.federation;
    this.federation = new Federation(
      {
        instanceId: f.instanceId,
        timeoutMs: f.timeoutMs,
        maxHops: f.maxHops,
        verifyIntervalMs: f.verifyIntervalMs,
        // Peers get the same breaker tunables as agents.
        breakers: { ...config.routing.breakers, halfLifeMs: config.routing.reputation.halfLifeMs },
        cache: { ...f.cache, redis: config.redis },
        maxAnswerBytes: f.maxAnswerBytes,
        slowAnswerMs: f.slowAnswerMs,
        eventTenant: config.security.bootstrapTenant,
      },
      this.clock,
      this.log.child({ component: "federation" }),
      this.bus,
    );
    this.directory.federation = this.federation;
    this.dispatcher.remote = this.federation;
    this.health = new HealthMonitor(
      this.store,
      [
        { name: "agent-store", health: () => this.store.health() },
        { name: "event-bus", health: () => this.bus.health() },
      ],
      this.clock,
    );
    this.health.circuits = (tenant) => this.router.breakers.notClosed(tenant);
    this.keys = security.keys;
    this.limits = security.limits;
    this.bridge = new WebSocketBridge(
      this.bus,
      {
        maxBufferedBytes: config.events.subscriberBufferBytes,
        pingIntervalMs: config.websocket.pingIntervalMs,
        maxPayloadBytes: config.websocket.maxMessageBytes,
      },
      this.log.child({ component: "websocket" }),
    );

    // The one event feed behind WatchEvents on every protocol (gRPC frames;
    // /ws has its own framing of the same implementation).
    const grpcFeed = new FanOut(this.bus, (event) => event.grpcFrame(), config.events.subscriberBufferBytes);
    const bindings: RestBinding[] = [
      {
        service: RegistryService,
        impl: registryService(this.registry, security.issuer, config.lease, {
          federationName: config.federationName,
          // A card URL comes from a caller, as an agent endpoint does: the dispatch SSRF guard's rules.
          fetcher: new CardFetcher(new AddressGuard({ loopback: config.dispatch.allowLoopback, private: config.dispatch.allowPrivate }, deps.dispatchLookup), {
            timeoutMs: config.a2a.cardFetchTimeoutMs,
            maxBytes: config.a2a.cardMaxBytes,
          }),
        }, {
          clock: this.clock,
          heartbeat: (principal, agentId, now) => security.guard.streamedHeartbeat(principal, agentId, now),
        }),
      },
      { service: DirectoryService, impl: directoryService(this.directory, security.signer, security.keys) },
      { service: RouterService, impl: routerService(this.router, this.dispatcher, this.federation) },
      {
        service: HealthService,
        impl: healthService(this.health, grpcFeed, VERSION, config.fleetWatchIntervalMs),
      },
      { service: AdminService, impl: adminService(this.registry, security.issuer, security.keys) },
      { service: FederationService, impl: federationService(this.federation) },
    ];
    const grpcHealth = grpcHealthService(
      this.health,
      bindings.map((b) => b.service.typeName),
    );
    const routes = (router: ConnectRouter) => {
      for (const b of bindings) router.service(b.service, b.impl);
      router.service(Health, grpcHealth);
      const reflection = reflectionServices([...bindings.map((b) => b.service), Health]);
      router.service(ServerReflection, reflection.v1);
      router.service(ServerReflectionV1Alpha, reflection.v1alpha);
    };
    const http = this.log.child({ component: "http" });
    // The one call pipeline: request id → guard → handler → outcome record.
    const bridgeRoute = this.bridge.route();
    const bridge = this.bridge;
    this.metrics = config.metrics
      ? new Metrics({
          agentsByStatus: () => this.health.agentsByStatus(),
          rpcSubscribers: () => grpcFeed.subscriberCount,
          wsSubscribers: () => bridge.clientCount,
          slo: config.slo.enabled ? () => this.slo.gauges() : undefined,
          federation: () => this.federation.stats(),
          routePaths: [bridgeRoute.path, "/metrics", "/mcp", "/.well-known/agent-card.json"],
        })
      : undefined;
    const tools = new FederatedTools({
      directory: this.directory,
      store: this.store,
      router: this.router,
      dispatcher: this.dispatcher,
      clock: this.clock,
      peers: () => this.federation.list(),
    });
    const mcpLog = this.log.child({ component: "mcp" });
    this.mcp = new McpEndpoint(
      tools,
      new CatalogWatch(this.bus, (tenant) => tools.digest(tenant), MCP_LIST_CHANGED_DEBOUNCE_MS, mcpLog),
      { ...config.mcp, name: config.federationName, version: VERSION, maxBodyBytes: config.maxBodyBytes },
      mcpLog,
    );
    const mcpRoute = this.mcp.route();
    const cardRoute = agentCardRoute({
      name: config.federationName,
      version: VERSION,
      publicUrl: config.a2a.publicUrl,
      tls: security.tls !== undefined,
      mutualTls: (config.tls?.clientAuth ?? "none") !== "none",
      maxAgeSec: 300,
    });
    const httpRoutes = [...(this.metrics ? [bridgeRoute, this.metrics.route(), mcpRoute] : [bridgeRoute, mcpRoute]), ...dashboardRoutes(), cardRoute];
    const probeLog = this.log.child({ component: "probes" });
    const addressGuard = new AddressGuard({ loopback: config.dispatch.allowLoopback, private: config.dispatch.allowPrivate }, deps.dispatchLookup);
    // One lease for the probe leader, who also evaluates SLOs and remediates (no duplicate alerts).
    const leadership = config.redis
      ? new RedisLeaderLease({
          url: config.redis.url,
          key: `${config.redis.prefix}:probes:leader`,
          token: `${config.replicaId}:${randomUUID()}`,
          ttlMs: config.probes.leaderTtlMs,
          log: probeLog,
        })
      : new SoleProber();
    this.probes = config.probes.enabled
      ? new ProbeScheduler(config.probes, {
          store: this.store,
          bus: this.bus,
          guard: addressGuard,
          leadership,
          observer: this.metrics?.probes ?? noProbeObserver,
          log: probeLog,
          replicaId: config.replicaId,
        })
      : noProbes;
    const sloLog = this.log.child({ component: "slo" });
    // With Redis, firing alerts and the Guard's state outlive the leader (a successor adopts them).
    const alertRedis = config.redis && config.slo.enabled ? new AlertRedisConnection(config.redis.url, sloLog) : undefined;
    const alertTtlMs = Math.max(3_600_000, 2 * config.slo.slow.longMs, config.slo.remediation.cooldownMs);
    this.slo = config.slo.enabled
      ? new SloEngine(config.slo, {
          bus: this.bus,
          clock: this.clock,
          log: sloLog,
          leadership,
          campaigns: !config.probes.enabled,
          firing: alertRedis && new RedisFiringAlerts(alertRedis, config.redis!.prefix, alertTtlMs),
        })
      : noSlos;
    this.remediation =
      config.slo.enabled && config.slo.remediation.enabled
        ? new PraetorianGuard(config.slo.remediation, {
            router: this.router,
            dispatcher: this.dispatcher,
            bus: this.bus,
            guard: addressGuard,
            http: new HttpJsonClient({ max: 4, idleMs: 30_000 }),
            clock: this.clock,
            log: this.log.child({ component: "remediation" }),
            ledger: alertRedis && new RedisRemediationLedger(alertRedis, config.redis!.prefix, config.slo.remediation.auditSize, alertTtlMs),
          })
        : noRemediation;
    this.probes.onResult((r) => this.slo.probed(r));
    this.slo.onAlert((a) => this.remediation.handle(a));
    this.health.probes = (id) => this.probes.state(id);
    this.health.slos = this.slo;
    this.health.remediation = this.remediation;
    this.probes.onRound((r) => this.telemetry.probeRound(r));
    this.telemetry.slos = this.slo;
    // Trace context first (a refused call has its trace id too), metrics before the log line.
    this.pipeline = new Pipeline([
      traceLink(),
      guardLink(security.guard),
      ...(this.metrics ? [this.metrics.link()] : []),
      logLink(http),
    ]);
    this.server = new FederationServer({
      bindings,
      routes,
      httpRoutes,
      pipeline: this.pipeline,
      onShutdown: () => {
        this.bridge.close();
        this.mcp.close();
      },
      grpcFastPath: config.grpcFastPath,
      extraServices: [{ service: Health, impl: grpcHealth }],
      feed: grpcFeed,
      tls: security.tls,
      maxBodyBytes: config.maxBodyBytes,
      sniffTimeoutMs: config.sniffTimeoutMs,
      shutdownGraceMs: config.shutdownGraceMs,
      connections: config.connections,
      log: http,
      cors: new CorsPolicy(config.corsAllowedOrigins),
    });
  }

  /**
   * Listens at once; a shared store or bus that is not reachable yet is
   * retried in the background while /health says NOT_SERVING and why.
   */
  async start(): Promise<number> {
    void this.store.start?.();
    this.bus.start?.();
    void this.catalogFeed?.start();
    await this.limits.start();
    this.port = await this.server.listen(this.config.port, this.config.host);
    this.reaper.start();
    this.federation.seed(this.config.federation.peers);
    this.federation.start();
    this.probes.start();
    this.slo.start();
    this.telemetry.start();
    this.log.info({ port: this.port, host: this.config.host, version: VERSION }, "federation core listening");
    return this.port;
  }

  /**
   * Graceful shutdown, bounded: every step has a deadline, and the whole
   * takes `SHUTDOWN_GRACE` plus at most about a second whatever the backends
   * do. /health turns NOT_SERVING, background retries stop, the server
   * drains (streams end, /ws gets 1001; after the grace the rest is cut),
   * queued events get until the grace's end to reach Redis, then the
   * backends are let go. The report says whether it was clean.
   */
  async stop(): Promise<StopReport> {
    const started = Date.now();
    const deadline = started + this.config.shutdownGraceMs;
    const timedOut: string[] = [];
    /** Waits for `work` until `until` at most; names the step if it was not done by then. */
    const step = async (name: string, work: Promise<unknown>, until: number): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const done = await Promise.race([
        work.then(
          () => true,
          (err: unknown) => (this.log.warn({ err, step: name }, "shutdown step failed"), true),
        ),
        new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, until - Date.now())).unref())),
      ]);
      clearTimeout(timer);
      if (!done) timedOut.push(name);
    };

    this.health.startDraining();
    this.telemetry.stop();
    // Retry loops end now: a store or bus that is down is not waited for.
    this.store.beginShutdown?.();
    this.bus.beginShutdown?.();
    this.catalogFeed?.stop();
    // No alert fires and no remediation starts from here; those in flight end ESCALATED.
    const slo = this.slo.stop();
    this.remediation.stop();
    // Async dispatches still running end as task.failed (their events still reach the bus, closed below).
    this.dispatcher.stop();
    this.federation.stop();
    // The last outcome batch goes to Redis and MongoDB meanwhile.
    const routing = this.router.stop();
    let drained = false;
    await Promise.all([
      // Probing stops and its probes in flight are aborted; the lease is handed over if Redis answers at once.
      step("probes", this.probes.stop(), Date.now() + 1_000),
      step("slo", slo, Date.now() + 1_000),
      // A sweep in flight is not work a client waits for: it gets a moment, then the store closes under it.
      this.reaper.stop(Math.min(1_000, this.config.shutdownGraceMs)),
      // The server cuts what is left at the grace itself; the margin is for its sockets to go.
      step("server", this.server.close().then((clean) => (drained = clean)), deadline + 500),
    ]);
    // Queued events get what is left of the grace to reach Redis (it may come back meanwhile).
    await step("event bus", this.bus.close(Math.max(deadline, Date.now() + 100)), Math.max(deadline, Date.now() + 100) + 300);
    await step("agent store", this.store.close(500), Date.now() + 600);
    await step("routing state", routing, Date.now() + 600);
    await this.tasks.close?.();
    this.limits.close();

    const unpublished = this.bus.unpublishedEvents?.() ?? { queued: 0, dropped: 0 };
    return {
      clean: drained && timedOut.length === 0 && unpublished.queued === 0,
      connectionsCut: !drained,
      unpublishedEvents: unpublished.queued,
      droppedEvents: unpublished.dropped,
      timedOut,
      durationMs: Date.now() - started,
    };
  }
}

/** How a shutdown ended (App.stop). */
export interface StopReport {
  /** Everything drained within the grace and nothing was left queued. */
  readonly clean: boolean;
  /** The grace ran out with connections open (a slow client, a stream not read): they were closed. */
  readonly connectionsCut: boolean;
  /** Events still queued for Redis when the process let go of it: lost with the process. */
  readonly unpublishedEvents: number;
  /** Events dropped earlier because the queue for an unreachable Redis was full. */
  readonly droppedEvents: number;
  /** Shutdown steps that missed their deadline (and were left behind). */
  readonly timedOut: readonly string[];
  readonly durationMs: number;
}

/** The shared adapters' drivers are loaded only when configured, to keep start-up fast. */
async function createStore(config: Config, log: Logger): Promise<AgentStore> {
  if (!config.mongodb) return new MemoryAgentStore();
  const { MongoAgentStore } = await import("./registry/mongo-agent-store.js");
  return new MongoAgentStore({ ...config.mongodb, log: log.child({ component: "mongodb" }) });
}

async function createBus(config: Config, clock: Clock, log: Logger): Promise<EventBus> {
  if (!config.redis) return new MemoryEventBus(clock, config.events.retention);
  const { RedisEventBus } = await import("./events/redis-event-bus.js");
  return new RedisEventBus(clock, {
    ...config.redis,
    retention: config.events.retention,
    maxPending: config.events.publishQueueLimit,
    log: log.child({ component: "redis" }),
  });
}

async function prepareSecurity(config: Config, clock: Clock, log: Logger): Promise<SecurityParts> {
  const sec = config.security;
  const keys = await FileKeyStore.open({
    dataDir: sec.dataDir,
    fromEnv: sec.signingKeys,
    clock,
    retireAfterMs: sec.keyRetireAfterMs,
  });
  const token = await bootstrapToken(sec, log);
  const verifier = new TokenVerifier(
    {
      federationIssuer: sec.issuer,
      audience: sec.audience,
      issuers: sec.issuers,
      algorithms: sec.algorithms,
      clockSkewSec: sec.clockSkewSec,
      jwksCooldownMs: sec.jwksCooldownMs,
      maxTokenBytes: sec.maxTokenBytes,
      bootstrapToken: token,
      bootstrapTenant: sec.bootstrapTenant,
    },
    keys,
    clock,
  );
  const limits = await RateLimits.create(sec.rateLimits, config.redis);
  const t = config.tls;
  return {
    keys,
    issuer: new TokenIssuer(keys, clock, { issuer: sec.issuer, audience: sec.audience, passportTtlMs: sec.passportTtlMs }),
    guard: new RequestGuard(verifier, limits, { trustDomain: sec.trustDomain, defaultTenant: sec.bootstrapTenant }),
    limits,
    signer: new ManifestSigner(sec.manifestSigning, keys),
    tls: t
      ? {
          // Read and parsed here, so a bad PEM is a ConfigError naming TLS_CERT / TLS_KEY / TLS_CA.
          ...loadTlsMaterial(t),
          requestCert: t.clientAuth !== "none",
          rejectUnauthorized: t.clientAuth === "require",
        }
      : undefined,
  };
}
