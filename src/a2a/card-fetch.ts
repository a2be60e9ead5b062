import { Code, ConnectError } from "@connectrpc/connect";
import { AddressGuard, DispatchRefused } from "../dispatch/address-guard.js";
import { oneShotAgent } from "../dispatch/pinned-connection.js";
import { pinnedFetch } from "../dispatch/pinned-fetch.js";
import { errors } from "../errors.js";

export interface CardFetchOptions {
  /** The whole fetch (resolve, connect, answer, body) gets this long. */
  readonly timeoutMs: number;
  /** A card larger than this is refused without reading the rest. */
  readonly maxBytes: number;
}

/**
 * Fetches an agent card from a URL a caller gave us — the same SSRF
 * exposure as dispatch, so the same guard: the host is resolved once,
 * every answer is checked (metadata and link-local never; loopback and
 * private ranges only with DISPATCH_ALLOW_LOOPBACK / _PRIVATE), the
 * request connects to exactly the checked address and a redirect is
 * refused, not followed. Refusals are FAILED_PRECONDITION (the URL is
 * well-formed; the deployment does not let us go there); an answer that is
 * not a card's JSON is INVALID_ARGUMENT naming `card`.
 */
export class CardFetcher {
  constructor(
    private readonly guard: AddressGuard,
    private readonly opts: CardFetchOptions,
  ) {}

  async fetch(cardUrl: string): Promise<unknown> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.opts.timeoutMs).unref();
    try {
      const target = await this.guard.pin(cardUrl, new URL(cardUrl).protocol === "https:" ? 443 : 80);
      const agent = oneShotAgent(target);
      try {
        const res = await pinnedFetch(target, { agent, maxResponseBytes: this.opts.maxBytes })(target.url, {
          method: "GET",
          headers: { accept: "application/json" },
          signal: controller.signal,
        });
        if (res.status !== 200) {
          await res.body?.cancel();
          throw new ConnectError(`card_url: answered HTTP ${res.status}, not the card`, Code.FailedPrecondition);
        }
        const body = await this.readBounded(res);
        try {
          return JSON.parse(body);
        } catch {
          throw errors.invalidArgument("card", "is not JSON");
        }
      } finally {
        agent.destroy();
      }
    } catch (err) {
      throw this.asRpcError(err, controller.signal.aborted);
    } finally {
      clearTimeout(timer);
    }
  }

  private async readBounded(res: Response): Promise<string> {
    const declared = Number(res.headers.get("content-length") ?? "0");
    if (declared > this.opts.maxBytes) {
      await res.body?.cancel();
      throw this.tooLarge();
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body ?? []) {
      size += chunk.byteLength;
      if (size > this.opts.maxBytes) throw this.tooLarge();
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  private tooLarge(): ConnectError {
    return new ConnectError(`card_url: the card is larger than ${this.opts.maxBytes} bytes (A2A_CARD_MAX_BYTES)`, Code.FailedPrecondition);
  }

  private asRpcError(err: unknown, timedOut: boolean): ConnectError {
    if (err instanceof ConnectError) return err;
    if (err instanceof DispatchRefused) return new ConnectError(`card_url: ${err.message.replace(/^dispatch refused: /, "refused: ")}`, Code.FailedPrecondition);
    if (timedOut) return new ConnectError(`card_url: no card within ${this.opts.timeoutMs}ms (A2A_CARD_FETCH_TIMEOUT)`, Code.DeadlineExceeded);
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return new ConnectError(`card_url: the card could not be fetched (${code})`, Code.Unavailable);
  }
}
