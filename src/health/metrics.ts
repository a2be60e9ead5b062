import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric, type MetricObjectWithValues, type MetricValue } from "prom-client";
import { AgentStatus } from "../registry/agent-record.js";
import { requirementOf } from "../security/access-policy.js";
import type { HttpRoute } from "../transport/http-routes.js";
import type { Call, Link, Protocol } from "../transport/pipeline.js";
import type { ProbeObserver } from "./probes.js";
import type { SloGauge } from "./slo.js";
import { PeerProblem } from "../../gen/federation/v1/event_pb.js";
import type { FederationStats } from "../federation/federation.js";

/** gRPC's own names for the codes (the `code` label), whatever the protocol spoke. */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** The `method` label of calls that named no known RPC or route (a wrong path, a scan): one series for all. */
export const UNKNOWN_METHOD = "unknown";
/** Its key in the series map (no method or route path starts with a NUL). */
const UNKNOWN_KEY = "\u0000unknown";

/** Seconds; sub-millisecond unary calls up to long streams (which land in +Inf). */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const STATUS_LABELS: readonly [AgentStatus, string][] = [
  [AgentStatus.HEALTHY, "healthy"],
  [AgentStatus.DEGRADED, "degraded"],
  [AgentStatus.UNHEALTHY, "unhealthy"],
  [AgentStatus.DRAINING, "draining"],
];

export interface MetricsSources {
  /** Agents of every tenant by status, read at scrape time. */
  readonly agentsByStatus: () => Promise<ReadonlyMap<AgentStatus, number>>;
  /** Event-feed subscribers now: WatchEvents on the RPC protocols, and /ws clients. */
  readonly rpcSubscribers: () => number;
  readonly wsSubscribers: () => number;
  /** The HTTP route table's paths (known `method` values besides the RPCs of the access policy). */
  readonly routePaths: readonly string[];
  /** SLO burn rates and firing alerts, per objective and severity, read at scrape time. */
  readonly slo?: () => { readonly burnRates: readonly SloGauge[]; readonly firing: readonly SloGauge[] };
  /** The federation's remote cache and the problems counted against peers, read at scrape time. */
  readonly federation?: () => FederationStats;
}

type CallLabels = { method: string; protocol: string; code: string };

/** One method × protocol × code: its count, and its durations as a histogram (per-bucket counts, cumulated when scraped). */
interface Series {
  readonly labels: CallLabels;
  count: number;
  sum: number;
  readonly buckets: Float64Array;
}

/**
 * Prometheus metrics (prom-client, one registry per app): RED metrics from
 * the pipeline's outcome record — calls and their durations per method ×
 * protocol × code, labels bounded by construction (methods are the access
 * policy's RPCs and the route table's paths, everything else is
 * "unknown"; no agent ids, tenants or paths) — and gauges read when
 * scraped: agents by status, event-feed subscribers, Node's process metrics.
 */
export class Metrics {
  readonly registry = new Registry();
  /**
   * Series per method → protocol → code, so a call costs two map reads and
   * a few additions. (prom-client's own counter and histogram hash the
   * label set on every increment, even through `labels()`: ~0.9 µs a call
   * for the pair. These are plain numbers, handed to prom-client's registry
   * to format when scraped.)
   */
  private readonly series = new Map<string, Map<Protocol, Series[]>>();
  private readonly all: Series[] = [];
  private readonly routePaths: ReadonlySet<string>;
  /** Capability probes: outcomes by transport, and latencies (no agent ids: per-agent detail stays in the API). */
  readonly probes: ProbeObserver;

  constructor(sources: MetricsSources) {
    this.routePaths = new Set(sources.routePaths);
    const registers = [this.registry];
    const all = this.all;
    this.registry.registerMetric(
      scraped("federation_calls_total", "Calls finished, per method (RPC or route), protocol and gRPC status code.", "counter", () =>
        all.map((s) => ({ labels: s.labels, value: s.count })),
      ),
    );
    this.registry.registerMetric(
      scraped(
        "federation_call_duration_seconds",
        "Call duration from first byte to outcome (streams: their whole life), per method, protocol and code.",
        "histogram",
        () => all.flatMap(histogramValues),
      ),
    );
    new Gauge({
      name: "federation_agents",
      help: "Registered agents of every tenant, by status.",
      labelNames: ["status"],
      registers,
      async collect() {
        const totals = await sources.agentsByStatus();
        for (const [status, label] of STATUS_LABELS) this.set({ status: label }, totals.get(status) ?? 0);
      },
    });
    new Gauge({
      name: "federation_event_subscribers",
      help: "Event-feed subscribers now: WatchEvents on gRPC, gRPC-Web, Connect and REST (rpc), and /ws clients (ws).",
      labelNames: ["feed"],
      registers,
      collect() {
        this.set({ feed: "rpc" }, sources.rpcSubscribers());
        this.set({ feed: "ws" }, sources.wsSubscribers());
      },
    });
    const slo = sources.slo;
    if (slo) {
      new Gauge({
        name: "federation_slo_burn_rate",
        help: "Highest burn rate of an SLO's alerting window pair over its subjects: min(long, short) of the pair (page: fast, ticket: slow).",
        labelNames: ["slo", "severity"],
        registers,
        collect() {
          for (const g of slo().burnRates) this.set({ slo: g.slo, severity: g.severity }, g.value);
        },
      });
      new Gauge({
        name: "federation_slo_alerts_firing",
        help: "SLO burn-rate alerts firing now on this replica (only the probe leader evaluates), per SLO and severity.",
        labelNames: ["slo", "severity"],
        registers,
        collect() {
          for (const g of slo().firing) this.set({ slo: g.slo, severity: g.severity }, g.value);
        },
      });
    }
    const fed = sources.federation;
    if (fed) {
      // Labels bounded by construction: cache events and PeerProblem names (no peer ids).
      this.registry.registerMetric(
        scraped("federation_remote_cache_total", "Remote-cache events: hit, shared_hit (from another replica), stale_hit, miss, eviction, refresh, refresh_failure.", "counter", () => {
          const c = fed().cache;
          return Object.entries({ hit: c.hits, shared_hit: c.sharedHits, stale_hit: c.staleHits, miss: c.misses, eviction: c.evictions, refresh: c.refreshes, refresh_failure: c.refreshFailures }).map(
            ([event, value]) => ({ labels: { event }, value }),
          );
        }),
      );
      new Gauge({
        name: "federation_remote_cache_bytes",
        help: "Bytes held by the remote cache (encoded answers, keys, per-entry overhead); bounded by FEDERATION_CACHE_BYTES.",
        registers,
        collect() {
          this.set(fed().cache.bytes);
        },
      });
      new Gauge({
        name: "federation_remote_cache_entries",
        help: "Remote answers held by the remote cache.",
        registers,
        collect() {
          this.set(fed().cache.entries);
        },
      });
      this.registry.registerMetric(
        scraped("federation_peer_problems_total", "Problems counted against federation peers, by kind (failed, too_many_results, oversized, slow, malformed, unsigned, bad_signature).", "counter", () =>
          [...fed().problems].map(([p, value]) => ({ labels: { problem: (PeerProblem[p] ?? "UNSPECIFIED").toLowerCase() }, value })),
        ),
      );
    }
    const probeResults = new Counter({
      name: "federation_probes_total",
      help: "Capability probes finished, per agent transport and outcome (ok, timeout, error, missing_tool, refused).",
      labelNames: ["transport", "outcome"],
      registers,
    });
    const probeSeconds = new Histogram({
      name: "federation_probe_duration_seconds",
      help: "Capability probe duration, per agent transport (a timed-out probe counts its timeout).",
      labelNames: ["transport"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.probes = {
      observe(transport, outcome, seconds) {
        probeResults.inc({ transport, outcome });
        probeSeconds.observe({ transport }, seconds);
      },
    };
    collectDefaultMetrics({ register: this.registry });
  }

  /** The pipeline link: one count and one duration per finished call. */
  link(): Link {
    return { after: (call) => this.record(call) };
  }

  /** GET /metrics as an entry of the HTTP route table, for holders of scope "metrics" (admin implies it). */
  route(): HttpRoute {
    return {
      path: "/metrics",
      requirement: "metrics",
      handle: async (_req, res) => {
        const text = await this.registry.metrics();
        res.statusCode = 200;
        res.setHeader("content-type", this.registry.contentType);
        res.setHeader("cache-control", "no-store");
        res.end(text);
      },
    };
  }

  private record(call: Call): void {
    const s = this.seriesOf(call);
    const seconds = call.durationMs / 1000;
    s.count++;
    s.sum += seconds;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]!) i++;
    s.buckets[i]!++;
  }

  private seriesOf(call: Call): Series {
    // Known methods get an entry each; every other value shares the "unknown" one (never stored by its own name).
    let byProtocol = this.series.get(call.method);
    if (!byProtocol) {
      const key = this.known(call.method) ? call.method : UNKNOWN_KEY;
      byProtocol = this.series.get(key);
      if (!byProtocol) this.series.set(key, (byProtocol = new Map()));
    }
    let byCode = byProtocol.get(call.protocol);
    if (!byCode) byProtocol.set(call.protocol, (byCode = []));
    const code = call.code >= 0 && call.code < CODE_NAMES.length ? call.code : 2;
    let s = byCode[code];
    if (!s) {
      const labels = { method: this.known(call.method) ? call.method : UNKNOWN_METHOD, protocol: call.protocol, code: CODE_NAMES[code]! };
      byCode[code] = s = { labels, count: 0, sum: 0, buckets: new Float64Array(DURATION_BUCKETS.length + 1) };
      this.all.push(s);
    }
    return s;
  }

  private known(method: string): boolean {
    if (this.routePaths.has(method)) return true;
    const slash = method.lastIndexOf("/");
    return slash > 0 && requirementOf(method.slice(0, slash), method.slice(slash + 1)) !== undefined;
  }
}

/** A metric prom-client's registry formats, whose values are read when scraped. */
function scraped(name: string, help: string, type: "counter" | "histogram", values: () => MetricValue<string>[]): Metric {
  const metric = {
    name,
    help,
    type,
    aggregator: "sum",
    get: async (): Promise<MetricObjectWithValues<MetricValue<string>>> => ({ name, help, type, aggregator: "sum", values: values() }) as never,
    reset: () => undefined,
  };
  return metric as unknown as Metric;
}

/** The text format's lines of one series: cumulative buckets, +Inf, sum and count. */
function histogramValues(s: Series): MetricValue<string>[] {
  const out: (MetricValue<string> & { metricName: string })[] = [];
  let cumulative = 0;
  for (let i = 0; i <= DURATION_BUCKETS.length; i++) {
    cumulative += s.buckets[i]!;
    const le = i < DURATION_BUCKETS.length ? DURATION_BUCKETS[i]! : "+Inf";
    out.push({ labels: { ...s.labels, le }, value: cumulative, metricName: "federation_call_duration_seconds_bucket" });
  }
  out.push({ labels: s.labels, value: s.sum, metricName: "federation_call_duration_seconds_sum" });
  out.push({ labels: s.labels, value: s.count, metricName: "federation_call_duration_seconds_count" });
  return out;
}
