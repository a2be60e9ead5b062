import { lookup as dnsLookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";

/** One DNS answer. */
export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/**
 * Resolves a host name to its addresses (all of them). The seam tests use
 * to make a name resolve to 169.254.169.254 without touching DNS or
 * /etc/hosts; production resolves with the system resolver (getaddrinfo).
 */
export type Lookup = (hostname: string) => Promise<readonly ResolvedAddress[]>;

export const systemLookup: Lookup = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

/** How long a host name's checked address is reused before it is resolved and checked again. */
export const PIN_CACHE_MS = 5_000;
/** Endpoints whose checked target is kept. */
const MAX_PINS = 4_096;

/** Dispatch was not attempted: the message names the rule. Nothing was sent. */
export class DispatchRefused extends Error {
  override name = "DispatchRefused";
}

/** Where an attempt connects: the checked address, and the name for Host / SNI. */
export interface PinnedTarget {
  readonly url: URL;
  /** The host name as the endpoint URL gives it (brackets removed), for Host and TLS SNI. */
  readonly hostname: string;
  readonly address: string;
  readonly family: 4 | 6;
  readonly port: number;
}

interface Rule {
  readonly name: string;
  /** The variable that opens it; undefined: never allowed. */
  readonly opener: "DISPATCH_ALLOW_LOOPBACK" | "DISPATCH_ALLOW_PRIVATE" | undefined;
  readonly list: BlockList;
  readonly ranges: string;
}

function rule(name: string, opener: Rule["opener"], ranges: [string, number, "ipv4" | "ipv6"][]): Rule {
  const list = new BlockList();
  for (const [net, prefix, type] of ranges) list.addSubnet(net, prefix, type);
  return { name, opener, list, ranges: ranges.map(([n, p]) => `${n}/${p}`).join(", ") };
}

/** Checked in this order; the first that matches names the refusal. */
const RULES: readonly Rule[] = [
  rule("cloud metadata", undefined, [
    ["169.254.169.254", 32, "ipv4"],
    ["fd00:ec2::254", 128, "ipv6"],
    ["100.100.100.200", 32, "ipv4"], // Alibaba Cloud
  ]),
  rule("link-local", undefined, [
    ["169.254.0.0", 16, "ipv4"],
    ["fe80::", 10, "ipv6"],
  ]),
  rule("unspecified / this-network", undefined, [
    ["0.0.0.0", 8, "ipv4"],
    ["::", 128, "ipv6"],
  ]),
  rule("multicast / reserved / broadcast", undefined, [
    ["224.0.0.0", 4, "ipv4"],
    ["240.0.0.0", 4, "ipv4"],
    ["ff00::", 8, "ipv6"],
  ]),
  rule("loopback", "DISPATCH_ALLOW_LOOPBACK", [
    ["127.0.0.0", 8, "ipv4"],
    ["::1", 128, "ipv6"],
  ]),
  rule("private", "DISPATCH_ALLOW_PRIVATE", [
    ["10.0.0.0", 8, "ipv4"],
    ["172.16.0.0", 12, "ipv4"],
    ["192.168.0.0", 16, "ipv4"],
    ["100.64.0.0", 10, "ipv4"], // carrier-grade NAT
    ["198.18.0.0", 15, "ipv4"], // benchmarking
    ["fc00::", 7, "ipv6"], // unique local
  ]),
];

/**
 * An IPv6 address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, the
 * NAT64 well-known prefix 64:ff9b::/96) is checked as that IPv4 address.
 */
function embeddedIpv4(address: string): string | undefined {
  const lower = address.toLowerCase();
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) {
    const hi = parseInt(hex[1]!, 16);
    const lo = parseInt(hex[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return undefined;
}

/**
 * The SSRF guard on dispatch. Agent endpoint URLs come from registrants, so
 * every address dispatch connects to is checked: link-local and cloud
 * metadata, unspecified, multicast and reserved addresses never; loopback
 * and private ranges only when DISPATCH_ALLOW_LOOPBACK / _PRIVATE say so.
 * A name is resolved once, every answer is checked, and the attempt
 * connects to exactly the checked address (Host and SNI keep the name), so
 * a DNS answer that changes between check and connect changes nothing.
 */
export class AddressGuard {
  /**
   * Checked targets by endpoint URL and default port: an IP literal's for
   * good, a name's for PIN_CACHE_MS (an attempt still connects only to the
   * checked address; a DNS change is seen within that time). Bounded.
   */
  private readonly pins = new Map<string, { readonly target: PinnedTarget; readonly until: number }>();

  constructor(
    private readonly allow: { readonly loopback: boolean; readonly private: boolean },
    private readonly lookup: Lookup = systemLookup,
  ) {}

  /** The target `pin` checked for this URL lately, without resolving or checking again; undefined: call `pin`. */
  cached(endpointUrl: string, defaultPort: number): PinnedTarget | undefined {
    const key = `${defaultPort} ${endpointUrl}`;
    const hit = this.pins.get(key);
    if (!hit) return undefined;
    if (hit.until > Date.now()) return hit.target;
    this.pins.delete(key);
    return undefined;
  }

  /** The rule that refuses this IP address, or undefined when it may be dispatched to. */
  refusal(address: string): string | undefined {
    const v4 = embeddedIpv4(address);
    const ip = v4 ?? address;
    const family = isIP(ip);
    if (family === 0) return `"${address}" is not an IP address`;
    const type = family === 4 ? "ipv4" : "ipv6";
    for (const r of RULES) {
      if (!r.list.check(ip, type)) continue;
      if (r.opener === "DISPATCH_ALLOW_LOOPBACK" && this.allow.loopback) return undefined;
      if (r.opener === "DISPATCH_ALLOW_PRIVATE" && this.allow.private) return undefined;
      const shown = v4 ? `${address} (${v4})` : address;
      return r.opener
        ? `${shown} is a ${r.name} address (${r.ranges}); set ${r.opener}=true to allow it`
        : `${shown} is a ${r.name} address (${r.ranges}); never dispatched to`;
    }
    return undefined;
  }

  /**
   * Resolves the endpoint's host once and checks every answer; throws
   * DispatchRefused naming the rule. The result is what to connect to.
   */
  async pin(endpointUrl: string, defaultPort: number): Promise<PinnedTarget> {
    let url: URL;
    try {
      url = new URL(endpointUrl);
    } catch {
      throw new DispatchRefused(`endpoint URL "${endpointUrl.slice(0, 200)}" is not a valid URL`);
    }
    const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    const port = url.port === "" ? defaultPort : Number(url.port);
    const literal = isIP(hostname);
    let answers: readonly ResolvedAddress[];
    if (literal !== 0) {
      answers = [{ address: hostname, family: literal === 6 ? 6 : 4 }];
    } else {
      try {
        answers = await this.lookup(hostname);
      } catch (err) {
        throw new DispatchRefused(`endpoint host "${hostname}" does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
      if (answers.length === 0) throw new DispatchRefused(`endpoint host "${hostname}" does not resolve`);
    }
    for (const a of answers) {
      const why = this.refusal(a.address);
      if (why) throw new DispatchRefused(literal !== 0 ? `dispatch refused: ${why}` : `dispatch refused: "${hostname}" resolves to ${why}`);
    }
    const first = answers[0]!;
    const target: PinnedTarget = { url, hostname, address: first.address, family: first.family, port };
    if (this.pins.size >= MAX_PINS) this.pins.delete(this.pins.keys().next().value!);
    this.pins.set(`${defaultPort} ${endpointUrl}`, { target, until: literal !== 0 ? Infinity : Date.now() + PIN_CACHE_MS });
    return target;
  }
}
