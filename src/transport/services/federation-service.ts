import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AddPeerResponseSchema,
  FederationService,
  ListPeersResponseSchema,
  RemovePeerResponseSchema,
} from "../../../gen/federation/v1/federation_service_pb.js";
import { parseAddPeer, parseRemovePeer } from "../../validation/requests.js";
import type { Federation } from "../../federation/federation.js";

/** FederationService over the Federation: thin, as the other service adapters. */
export function federationService(federation: Federation): ServiceImpl<typeof FederationService> {
  return {
    async addPeer(req) {
      return create(AddPeerResponseSchema, { peer: await federation.add(parseAddPeer(req)) });
    },
    removePeer(req) {
      federation.remove(parseRemovePeer(req));
      return create(RemovePeerResponseSchema, {});
    },
    listPeers() {
      return create(ListPeersResponseSchema, { peers: federation.list() });
    },
  };
}
