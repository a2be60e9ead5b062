import { Code, ConnectError } from "@connectrpc/connect";
import { Command } from "commander";
import { CircuitStateSchema } from "../../../gen/federation/v1/event_pb.js";
import {
  FederationService,
  ListPeersResponseSchema,
  PeerKindSchema,
  PeerStatusSchema,
} from "../../../gen/federation/v1/federation_service_pb.js";
import { contextOf } from "../context.js";
import { usageError } from "../exit-codes.js";
import { durationLabel, enumLabel, messageJson, numberLabel, printJson, table, timeLabel } from "../output.js";

export const peersCommand = new Command("peers")
  .summary("list the federation's peers (FederationService/ListPeers)")
  .description("The other registries this federation asks for federated reads, with their standing. Exit 2 from a server without federation.")
  .action(async (_opts: unknown, cmd: Command) => {
    const { conn, out } = await contextOf(cmd);
    let listed;
    try {
      listed = await conn.client(FederationService).listPeers({}, { timeoutMs: conn.timeoutMs });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented) {
        throw usageError(`peers: not supported by this server (${conn.url} does not implement federation.v1.FederationService)`);
      }
      throw err;
    }
    if (out.json) return printJson(out, messageJson(ListPeersResponseSchema, listed));
    if (listed.peers.length === 0) return out.line("no peers");
    out.line(
      table(
        ["PEER", "URL", "KIND", "STATUS", "BREAKER", "REPUTATION", "LATENCY", "LAST CONTACT", "LAST ERROR"],
        listed.peers.map((p) => [
          p.peerId,
          p.url,
          enumLabel(PeerKindSchema, p.kind, "PEER_KIND_"),
          enumLabel(PeerStatusSchema, p.status, "PEER_STATUS_"),
          enumLabel(CircuitStateSchema, p.breaker, "CIRCUIT_STATE_"),
          numberLabel(p.reputation),
          durationLabel(p.latency),
          timeLabel(p.lastContactAt),
          p.lastError || "",
        ]),
      ),
    );
  });
