import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AdminService,
  MintTokenResponseSchema,
  RotateSigningKeyResponseSchema,
  ShareAgentResponseSchema,
} from "../../../gen/federation/v1/admin_service_pb.js";
import { errors } from "../../errors.js";
import { agentMessageOnce } from "../../registry/agent-message.js";
import type { Registry } from "../../registry/registry.js";
import type { KeyStore } from "../../security/key-store.js";
import { principalKey, SCOPES, type Scope } from "../../security/principal.js";
import type { TokenIssuer } from "../../security/token-issuer.js";
import { parseAgentId } from "../../validation/requests.js";

const MAX_TOKEN_TTL_MS = 30 * 24 * 3_600_000;
const tenantPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function adminService(registry: Registry, issuer: TokenIssuer, keys: KeyStore): ServiceImpl<typeof AdminService> {
  return {
    async mintToken(req) {
      if (!tenantPattern.test(req.tenant)) throw errors.invalidArgument("tenant", `must match ${tenantPattern.source}`);
      if (req.scopes.length === 0) throw errors.invalidArgument("scopes", "at least one is required");
      req.scopes.forEach((s, i) => {
        if (!(SCOPES as readonly string[]).includes(s)) {
          throw errors.invalidArgument(`scopes[${i}]`, `unknown scope "${s.slice(0, 32)}"; known: ${SCOPES.join(", ")}`);
        }
      });
      if (req.subject.length > 256) throw errors.invalidArgument("subject", "must be at most 256 characters");
      const ttl = req.ttl ? durationMs(req.ttl) : 3_600_000;
      if (!(ttl > 0 && ttl <= MAX_TOKEN_TTL_MS)) throw errors.invalidArgument("ttl", "must be between 1s and 30 days");
      const minted = await issuer.mint(req.tenant, req.scopes as Scope[], req.subject || `tenant:${req.tenant}`, ttl);
      return create(MintTokenResponseSchema, { token: minted.token, expiresAt: timestampFromMs(minted.expiresAt) });
    },
    async rotateSigningKey() {
      const kid = await keys.rotate();
      return create(RotateSigningKeyResponseSchema, {
        keyId: kid,
        activeKeyIds: keys.jwks().keys.map((k) => String(k.kid)),
      });
    },
    async shareAgent(req, ctx) {
      const agent = await registry.share(parseAgentId(req), req.shared, ctx.values.get(principalKey));
      return create(ShareAgentResponseSchema, { agent: agentMessageOnce(agent) });
    },
  };
}
