import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { SecurityConfig } from "../config.js";
import type { Logger } from "../logger.js";

/**
 * The dev-mode root credential, the way a dev-mode secret store hands out a
 * root token: FEDERATION_BOOTSTRAP_TOKEN when set; otherwise one generated
 * on first start, kept in `<dataDir>/bootstrap-token` (mode 0600) and
 * printed once to the terminal — never to the log. None when external
 * issuers are configured and no token is set: production uses real tokens.
 */
export async function bootstrapToken(sec: SecurityConfig, log: Logger): Promise<string | undefined> {
  if (sec.bootstrapToken !== undefined) return sec.bootstrapToken === "" ? undefined : sec.bootstrapToken;
  if (sec.issuers.length > 0) return undefined;
  const file = path.join(sec.dataDir, "bootstrap-token");
  try {
    const token = (await readFile(file, "utf8")).trim();
    log.info({ file }, "bootstrap admin token loaded from the data directory");
    return token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const token = `fcb_${randomBytes(32).toString("base64url")}`;
  await mkdir(sec.dataDir, { recursive: true, mode: 0o700 });
  await writeFile(file, `${token}\n`, { mode: 0o600, flag: "wx" });
  process.stderr.write(
    `\n  Bootstrap admin token (shown once; also in ${file}):\n\n    ${token}\n\n` +
      `  Mint tenant tokens with it: see README "Authentication".\n\n`,
  );
  return token;
}
