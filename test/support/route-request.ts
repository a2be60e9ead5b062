import { create as createMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { RouteRequestSchema } from "../../gen/federation/v1/router_service_pb.js";

export function create(init: MessageInitShape<typeof RouteRequestSchema>) {
  return createMessage(RouteRequestSchema, init);
}
