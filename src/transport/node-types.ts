import type { connectNodeAdapter } from "@connectrpc/connect-node";

/** The request/response pair connect-node hands to handlers and fallbacks (http or http2). */
export type NodeRequest = Parameters<ReturnType<typeof connectNodeAdapter>>[0];
export type NodeResponse = Parameters<ReturnType<typeof connectNodeAdapter>>[1];
