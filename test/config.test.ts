import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.js";
import { TestPki, type Pem } from "./support/certs.js";
import { ADMIN_TOKEN, startApp } from "./support/app.js";
import { openWs } from "./support/feeds.js";

/**
 * Start-up configuration is checked in one place with errors that name the
 * variable: every bad value below must give a ConfigError whose message
 * starts with `NAME:`, never a TypeError, SyntaxError or OpenSSL error.
 */

const tmp = mkdtempSync(path.join(os.tmpdir(), "fc-config-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `fn` and returns the ConfigError it throws (failing on anything else). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String((err as Error)?.stack ?? err)}`);
    return err;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

async function configErrorAsync(fn: () => Promise<unknown>): Promise<ConfigError> {
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String((err as Error)?.stack ?? err)}`);
    return err;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

const startsWith = (name: string) => new RegExp(`^${name}: `);

/** A usable key set in the shape of signing-keys.json / FEDERATION_SIGNING_KEYS, made now. */
async function keySet(n = 1) {
  const keys = [];
  for (let i = 0; i < n; i++) {
    const { publicKey, privateKey } = await generateKeyPair("EdDSA", { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    keys.push({
      kid: await calculateJwkThumbprint(publicJwk),
      createdAt: 1_700_000_000_000 + i,
      privateJwk: await exportJWK(privateKey),
      publicJwk,
    });
  }
  return { keys };
}

describe("RATE_LIMITS", () => {
  it.each([
    ["null", "null"],
    ["an array", "[1]"],
    ["a string", '"acme"'],
    ["a number", "5"],
    ["not JSON", "{acme: 5}"],
    ["a string count", '{"t": "5"}'],
    ["zero", '{"t": 0}'],
    ["a negative count", '{"t": -3}'],
    ["a fraction", '{"t": 1.5}'],
    ["a nested object", '{"t": {"n": 5}}'],
    ["null count", '{"t": null}'],
    ["a boolean", '{"t": true}'],
    ["an empty tenant name", '{"": 5}'],
  ])("%s is a ConfigError naming RATE_LIMITS", (_, value) => {
    const err = configError(() => loadConfig({ RATE_LIMITS: value }));
    expect(err.message).toMatch(startsWith("RATE_LIMITS"));
  });

  it("names the tenant whose limit is wrong", () => {
    expect(configError(() => loadConfig({ RATE_LIMITS: '{"ok": 5, "acme": "5"}' })).message).toContain('"acme"');
  });

  it("accepts an object of positive integers", () => {
    expect(loadConfig({ RATE_LIMITS: '{"acme": 50, "beta": 1}' }).security.rateLimits.perTenant).toEqual({ acme: 50, beta: 1 });
    expect(loadConfig({}).security.rateLimits.perTenant).toEqual({});
  });

  it("a tenant called constructor gets no limit from Object.prototype", () => {
    expect(loadConfig({ RATE_LIMITS: '{"acme": 5}' }).security.rateLimits.perTenant["constructor"]).toBeUndefined();
  });
});

describe("FEDERATION_SIGNING_KEYS", () => {
  it.each([
    ["not JSON", "{keys: []}"],
    ["null", "null"],
    ["an array", "[]"],
    ["an object without keys", "{}"],
    ["keys not an array", '{"keys": {}}'],
    ["an empty key set", '{"keys": []}'],
    ["a key that is not an object", '{"keys": [5]}'],
  ])("%s is a ConfigError naming FEDERATION_SIGNING_KEYS", (_, value) => {
    const err = configError(() => loadConfig({ FEDERATION_SIGNING_KEYS: value }));
    expect(err.message).toMatch(startsWith("FEDERATION_SIGNING_KEYS"));
  });

  const broken: [string, (k: any) => void][] = [
    ["no kid", (k) => delete k.kid],
    ["a numeric kid", (k) => (k.kid = 7)],
    ["no createdAt", (k) => delete k.createdAt],
    ["a string createdAt", (k) => (k.createdAt = "yesterday")],
    ["a string retiresAt", (k) => (k.retiresAt = "never")],
    ["no privateJwk", (k) => delete k.privateJwk],
    ["a privateJwk string", (k) => (k.privateJwk = "secret")],
    ["a privateJwk without d (a public key)", (k) => delete k.privateJwk.d],
    ["an RSA privateJwk", (k) => (k.privateJwk.kty = "RSA")],
    ["a P-256 curve", (k) => (k.privateJwk.crv = "P-256")],
    ["no publicJwk", (k) => delete k.publicJwk],
    ["a publicJwk with a private part", (k) => (k.publicJwk.d = k.privateJwk.d)],
  ];
  it.each(broken)("a key with %s is a ConfigError naming the variable and the key", async (_, breakIt) => {
    const set = await keySet(2);
    const bad = set.keys[1]!;
    breakIt(bad);
    const err = configError(() => loadConfig({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) }));
    expect(err.message).toMatch(startsWith("FEDERATION_SIGNING_KEYS"));
    expect(err.message).toMatch(/keys\[1\]/);
  });

  it("a well-formed but unusable private key fails App.create with a ConfigError naming the key", async () => {
    const set = await keySet(2);
    set.keys[0]!.privateJwk.d = "AAAA"; // 3 bytes, not an Ed25519 private key
    const err = await configErrorAsync(() => startApp({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) }));
    expect(err.message).toMatch(startsWith("FEDERATION_SIGNING_KEYS"));
    expect(err.message).toContain(set.keys[0]!.kid);
  });

  it("a publicJwk of another key is a ConfigError naming the key", async () => {
    const set = await keySet(2);
    set.keys[1]!.publicJwk = set.keys[0]!.publicJwk;
    const err = configError(() => loadConfig({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) }));
    expect(err.message).toMatch(startsWith("FEDERATION_SIGNING_KEYS"));
    expect(err.message).toContain(set.keys[1]!.kid);
  });

  it("a private key (d) that is not the public key's fails App.create with a ConfigError naming the key", async () => {
    const set = await keySet(2);
    set.keys[1]!.privateJwk.d = set.keys[0]!.privateJwk.d;
    const err = await configErrorAsync(() => startApp({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) }));
    expect(err.message).toMatch(startsWith("FEDERATION_SIGNING_KEYS"));
    expect(err.message).toContain(set.keys[1]!.kid);
  });

  it("a valid key set loads, and the newest key signs", async () => {
    const set = await keySet(2);
    const t = await startApp({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) });
    try {
      expect(t.app.keys.currentKid()).toBe(set.keys[1]!.kid);
      expect(t.app.keys.jwks().keys.map((k) => k.kid).sort()).toEqual(set.keys.map((k) => k.kid).sort());
    } finally {
      await t.close();
    }
  });

  it("a corrupt signing-keys.json in DATA_DIR is a ConfigError naming the file, not a SyntaxError", async () => {
    const dataDir = path.join(tmp, "corrupt-keys");
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(path.join(dataDir, "signing-keys.json"), "{not json");
    const err = await configErrorAsync(() => startApp({ DATA_DIR: dataDir }));
    expect(err.message).toMatch(startsWith("DATA_DIR"));
    expect(err.message).toContain("signing-keys.json");
  });
});

describe("TLS_CERT / TLS_KEY / TLS_CA", () => {
  const pki = new TestPki();
  let ca: Pem;
  let server: Pem;
  let other: Pem;
  let junk: string;
  beforeAll(() => {
    ca = pki.ca("config-ca");
    server = pki.leaf("config-server", ca, "DNS:localhost,IP:127.0.0.1");
    other = pki.leaf("config-other", ca, "DNS:localhost");
    junk = path.join(pki.dir, "junk.pem");
    writeFileSync(junk, "this is not PEM\n");
  });
  afterAll(() => pki.dispose());

  const missing = () => path.join(tmp, "no-such-file.pem");

  it("a TLS_CERT that does not exist is a ConfigError naming TLS_CERT, the path and the reason", () => {
    const err = configError(() => loadConfig({ TLS_CERT: missing(), TLS_KEY: server.keyFile }));
    expect(err.message).toBe(`TLS_CERT: cannot read "${missing()}": ENOENT`);
  });

  it("a TLS_KEY that does not exist is a ConfigError naming TLS_KEY", () => {
    const err = configError(() => loadConfig({ TLS_CERT: server.certFile, TLS_KEY: missing() }));
    expect(err.message).toBe(`TLS_KEY: cannot read "${missing()}": ENOENT`);
  });

  it("a TLS_CA that does not exist is a ConfigError naming TLS_CA", () => {
    const err = configError(() => loadConfig({ TLS_CERT: server.certFile, TLS_KEY: server.keyFile, TLS_CA: missing() }));
    expect(err.message).toBe(`TLS_CA: cannot read "${missing()}": ENOENT`);
  });

  it("a directory is not a readable file", () => {
    const err = configError(() => loadConfig({ TLS_CERT: pki.dir, TLS_KEY: server.keyFile }));
    expect(err.message).toBe(`TLS_CERT: cannot read "${pki.dir}": EISDIR`);
  });

  it("TLS_CA or TLS_CLIENT_AUTH without a certificate is a ConfigError, not silently plain text", () => {
    expect(configError(() => loadConfig({ TLS_CA: ca.certFile })).message).toMatch(startsWith("TLS_CA"));
    expect(configError(() => loadConfig({ TLS_CLIENT_AUTH: "require" })).message).toMatch(startsWith("TLS_CLIENT_AUTH"));
  });

  it("a TLS_CERT that is not a PEM certificate fails App.create with a ConfigError naming TLS_CERT", async () => {
    const err = await configErrorAsync(() => startApp({ TLS_CERT: junk, TLS_KEY: server.keyFile }));
    expect(err.message).toMatch(startsWith("TLS_CERT"));
    expect(err.message).toContain(junk);
  });

  it("a private key given as TLS_CERT names TLS_CERT", async () => {
    const err = await configErrorAsync(() => startApp({ TLS_CERT: server.keyFile, TLS_KEY: server.keyFile }));
    expect(err.message).toMatch(startsWith("TLS_CERT"));
  });

  it("a TLS_KEY that is not a PEM private key names TLS_KEY", async () => {
    const err = await configErrorAsync(() => startApp({ TLS_CERT: server.certFile, TLS_KEY: junk }));
    expect(err.message).toMatch(startsWith("TLS_KEY"));
    expect(err.message).toContain(junk);
  });

  it("a TLS_KEY that does not belong to TLS_CERT names TLS_KEY", async () => {
    const err = await configErrorAsync(() => startApp({ TLS_CERT: server.certFile, TLS_KEY: other.keyFile }));
    expect(err.message).toMatch(startsWith("TLS_KEY"));
  });

  it("a TLS_CA without a PEM certificate names TLS_CA (OpenSSL would silently trust nobody)", async () => {
    const err = await configErrorAsync(() =>
      startApp({ TLS_CERT: server.certFile, TLS_KEY: server.keyFile, TLS_CA: junk, TLS_CLIENT_AUTH: "require" }),
    );
    expect(err.message).toMatch(startsWith("TLS_CA"));
  });

  it("good files load", async () => {
    const config = loadConfig({ TLS_CERT: server.certFile, TLS_KEY: server.keyFile, TLS_CA: ca.certFile });
    expect(config.tls).toMatchObject({ cert: server.certFile, key: server.keyFile, ca: ca.certFile, clientAuth: "require" });
    const t = await startApp({ TLS_CERT: server.certFile, TLS_KEY: server.keyFile, TLS_CA: ca.certFile });
    await t.close();
  });
});

describe("AUTH_ISSUERS", () => {
  const jwk = { kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" };
  it.each([
    ["null", "null"],
    ["an object", '{"issuer": "a", "jwks": {"keys": []}}'],
    ["not JSON", "[{issuer: a}]"],
    ["a null entry", "[null]"],
    ["a string entry", '["https://idp"]'],
    ["a numeric issuer", '[{"issuer": 5, "jwksUri": "https://idp/jwks"}]'],
    ["an empty issuer", '[{"issuer": "", "jwksUri": "https://idp/jwks"}]'],
    ["no key source", '[{"issuer": "a"}]'],
    ["both key sources", `[{"issuer": "a", "jwksUri": "https://idp/jwks", "jwks": {"keys": [${JSON.stringify(jwk)}]}}]`],
    ["a numeric jwksUri", '[{"issuer": "a", "jwksUri": 5}]'],
    ["a non-http jwksUri", '[{"issuer": "a", "jwksUri": "file:///etc/passwd"}]'],
    ["an unparsable jwksUri", '[{"issuer": "a", "jwksUri": "http://"}]'],
    ["jwks a string", '[{"issuer": "a", "jwks": "keys"}]'],
    ["jwks an array", '[{"issuer": "a", "jwks": []}]'],
    ["jwks without keys", '[{"issuer": "a", "jwks": {}}]'],
    ["jwks.keys not an array", '[{"issuer": "a", "jwks": {"keys": {}}}]'],
    ["jwks.keys holding a number", '[{"issuer": "a", "jwks": {"keys": [5]}}]'],
    ["a jwk without kty", '[{"issuer": "a", "jwks": {"keys": [{"x": "abc"}]}}]'],
    ["a private jwk", `[{"issuer": "a", "jwks": {"keys": [${JSON.stringify({ ...jwk, d: "secret" })}]}}]`],
    ["the same issuer twice", '[{"issuer": "a", "jwksUri": "https://idp/1"}, {"issuer": "a", "jwksUri": "https://idp/2"}]'],
  ])("%s is a ConfigError naming AUTH_ISSUERS", (_, value) => {
    const err = configError(() => loadConfig({ AUTH_ISSUERS: value }));
    expect(err.message).toMatch(startsWith("AUTH_ISSUERS"));
  });

  it("accepts a remote and a fixed key set", async () => {
    const env = {
      AUTH_ISSUERS: JSON.stringify([
        { issuer: "https://remote", jwksUri: "https://remote/.well-known/jwks.json" },
        { issuer: "https://fixed", jwks: { keys: [jwk] } },
      ]),
    };
    expect(loadConfig(env).security.issuers).toHaveLength(2);
    const t = await startApp(env);
    await t.close();
  });
});

describe("tunables", () => {
  it("have their defaults", () => {
    const c = loadConfig({});
    expect(c.websocket).toEqual({ pingIntervalMs: 30_000, maxMessageBytes: 65_536 });
    expect(c.events.publishQueueLimit).toBe(100_000);
  });

  it("are read from WS_PING_INTERVAL, WS_MAX_MESSAGE_BYTES and EVENT_PUBLISH_QUEUE", () => {
    const c = loadConfig({ WS_PING_INTERVAL: "5s", WS_MAX_MESSAGE_BYTES: "4096", EVENT_PUBLISH_QUEUE: "500" });
    expect(c.websocket).toEqual({ pingIntervalMs: 5_000, maxMessageBytes: 4096 });
    expect(c.events.publishQueueLimit).toBe(500);
  });

  it.each([
    ["WS_PING_INTERVAL", "often"],
    ["WS_PING_INTERVAL", "0"],
    ["WS_PING_INTERVAL", "1000h"],
    ["WS_MAX_MESSAGE_BYTES", "64k"],
    ["WS_MAX_MESSAGE_BYTES", "10"],
    ["EVENT_PUBLISH_QUEUE", "-1"],
    ["EVENT_PUBLISH_QUEUE", "0"],
  ])("%s=%s is a ConfigError naming it", (name, value) => {
    expect(configError(() => loadConfig({ [name]: value })).message).toMatch(startsWith(name));
  });

  it("/ws closes a client whose frame passes WS_MAX_MESSAGE_BYTES with 1009", async () => {
    const t = await startApp({ WS_MAX_MESSAGE_BYTES: "1024" });
    try {
      const feed = await openWs(t.port);
      const closed = new Promise<number>((resolve) => feed.ws.on("close", (code) => resolve(code)));
      feed.ws.send("x".repeat(2048));
      expect(await closed).toBe(1009);
    } finally {
      await t.close();
    }
  });

  it("/ws pings every WS_PING_INTERVAL", async () => {
    const t = await startApp({ WS_PING_INTERVAL: "1s" });
    try {
      const feed = await openWs(t.port);
      const pinged = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 2_500);
        feed.ws.once("ping", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      expect(pinged).toBe(true);
      feed.close();
    } finally {
      await t.close();
    }
  });
});

describe("the process", () => {
  const root = path.resolve(import.meta.dirname, "..");

  /** Runs src/main.ts with `env` and resolves when it exits (it must not start). */
  function run(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const dataDir = mkdtempSync(path.join(tmp, "proc-"));
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: root,
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", DATA_DIR: dataDir, FEDERATION_BOOTSTRAP_TOKEN: ADMIN_TOKEN, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`still running after 15s: ${stdout}${stderr}`));
      }, 15_000);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  const noStack = (text: string) => {
    expect(text).not.toMatch(/^\s+at /m);
    expect(text).not.toMatch(/TypeError|SyntaxError|ERR_OSSL|node:internal/);
  };

  it("RATE_LIMITS=null exits non-zero with one line naming RATE_LIMITS and no stack trace", async () => {
    const { code, stdout, stderr } = await run({ RATE_LIMITS: "null" });
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    const lines = stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/RATE_LIMITS: /);
    noStack(stderr + stdout);
  }, 20_000);

  it("an unusable FEDERATION_SIGNING_KEYS key (found at App.create) exits the same way", async () => {
    const set = await keySet(1);
    set.keys[0]!.privateJwk.d = "AAAA";
    const { code, stdout, stderr } = await run({ FEDERATION_SIGNING_KEYS: JSON.stringify(set) });
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    const lines = stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/FEDERATION_SIGNING_KEYS: /);
    noStack(stderr + stdout);
  }, 20_000);
});
