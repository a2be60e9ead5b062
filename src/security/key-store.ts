import { createPublicKey, KeyObject } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  calculateJwkThumbprint,
  CompactSign,
  exportJWK,
  FlattenedSign,
  generateKeyPair,
  importJWK,
  SignJWT,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
} from "jose";
import type { Clock } from "../clock.js";
import { ConfigError, signingKeySetProblem } from "../config.js";

/**
 * The federation's signing keys. This is the KMS seam: everything that
 * signs goes through these operations, so a cloud KMS adapter implements
 * this interface and private keys never leave it. The file store below is
 * the embedded default.
 */
export interface KeyStore {
  /** Signs a JWT with the current key (EdDSA), `kid` in the header. */
  signJwt(claims: JWTPayload, expiresAtMs: number, typ: string): Promise<string>;
  /** A compact JWS over exactly these payload bytes (a JWT whose claims JSON the caller wrote). */
  signCompact(payload: Uint8Array, typ: string): Promise<string>;
  /** A detached JWS (RFC 7515 appendix F, `<header>..<signature>`) over `payload`. */
  signDetached(payload: Uint8Array): Promise<{ jws: string; kid: string }>;
  /** Public keys that still verify: the current one and those not yet retired. */
  jwks(): JSONWebKeySet;
  /** Makes a new key current; the others keep verifying until they retire. */
  rotate(): Promise<string>;
  currentKid(): string;
}

interface StoredKey {
  readonly kid: string;
  readonly createdAt: number;
  /** Stops verifying after this (set when a newer key takes over). */
  readonly retiresAt: number | undefined;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

interface LoadedKey extends StoredKey {
  readonly privateKey: CryptoKey;
}

const ALG = "EdDSA";

/**
 * Keys in `<dataDir>/signing-keys.json` (created on first start, mode
 * 0600), or from FEDERATION_SIGNING_KEYS (the same JSON) so several
 * replicas sign and verify with one key set.
 */
export class FileKeyStore implements KeyStore {
  private keys: LoadedKey[] = [];

  private constructor(
    private readonly file: string | undefined,
    private readonly clock: Clock,
    private readonly retireAfterMs: number,
  ) {}

  static async open(opts: {
    dataDir: string;
    fromEnv: string | undefined;
    clock: Clock;
    retireAfterMs: number;
  }): Promise<FileKeyStore> {
    if (opts.fromEnv) {
      const store = new FileKeyStore(undefined, opts.clock, opts.retireAfterMs);
      await store.load(opts.fromEnv, "FEDERATION_SIGNING_KEYS: ");
      return store;
    }
    const file = path.join(opts.dataDir, "signing-keys.json");
    const store = new FileKeyStore(file, opts.clock, opts.retireAfterMs);
    const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    let text: string | undefined;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new ConfigError(`DATA_DIR: cannot read "${file}": ${code(err)}`);
    }
    if (text) {
      await store.load(text, `DATA_DIR: "${file}": `);
    } else {
      try {
        await store.rotate();
      } catch (err) {
        throw new ConfigError(`DATA_DIR: cannot write "${file}": ${code(err)}`);
      }
    }
    return store;
  }

  async signJwt(claims: JWTPayload, expiresAtMs: number, typ: string): Promise<string> {
    const key = this.current();
    return new SignJWT(claims)
      .setProtectedHeader({ alg: ALG, kid: key.kid, typ })
      .setIssuedAt(Math.floor(this.clock.now() / 1000))
      .setExpirationTime(Math.floor(expiresAtMs / 1000))
      .sign(key.privateKey);
  }

  async signCompact(payload: Uint8Array, typ: string): Promise<string> {
    const key = this.current();
    return new CompactSign(payload).setProtectedHeader({ alg: ALG, kid: key.kid, typ }).sign(key.privateKey);
  }

  async signDetached(payload: Uint8Array): Promise<{ jws: string; kid: string }> {
    const key = this.current();
    const jws = await new FlattenedSign(payload).setProtectedHeader({ alg: ALG, kid: key.kid }).sign(key.privateKey);
    return { jws: `${jws.protected}..${jws.signature}`, kid: key.kid };
  }

  jwks(): JSONWebKeySet {
    const now = this.clock.now();
    return {
      keys: this.keys
        .filter((k) => k.retiresAt === undefined || k.retiresAt > now)
        .map((k) => ({ ...k.publicJwk, kid: k.kid, alg: ALG, use: "sig" })),
    };
  }

  currentKid(): string {
    return this.current().kid;
  }

  async rotate(): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair(ALG, { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(publicJwk);
    const now = this.clock.now();
    const previous = this.keys.map((k) => ({ ...k, retiresAt: k.retiresAt ?? now + this.retireAfterMs }));
    this.keys = [
      ...previous.filter((k) => k.retiresAt > now),
      { kid, createdAt: now, retiresAt: undefined, privateJwk: await exportJWK(privateKey), publicJwk, privateKey },
    ];
    await this.save();
    return kid;
  }

  private current(): LoadedKey {
    return this.keys[this.keys.length - 1]!;
  }

  /**
   * Loads a key set (the JSON of signing-keys.json); anything wrong is a
   * ConfigError that starts with `source` (the variable or file) and names
   * the key, never its private part.
   */
  private async load(text: string, source: string): Promise<void> {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new ConfigError(`${source}is not valid JSON; expected the content of signing-keys.json, {"keys": [...]}`);
    }
    const problem = signingKeySetProblem(doc);
    if (problem) throw new ConfigError(`${source}${problem}`);
    const stored = (doc as { keys: StoredKey[] }).keys;
    this.keys = await Promise.all(
      stored.map(async (k, n) => {
        const bad = (why: string) => new ConfigError(`${source}keys[${n}] (kid "${k.kid}"): ${why}`);
        let privateKey: CryptoKey;
        try {
          privateKey = (await importJWK(k.privateJwk, ALG)) as CryptoKey;
        } catch (err) {
          throw bad(`"privateJwk" is not a usable Ed25519 private key (${(err as Error).message})`);
        }
        // The public half is what verifiers get from jwks(): it must be this key's.
        const x = createPublicKey(KeyObject.from(privateKey)).export({ format: "jwk" }).x;
        if (x !== k.publicJwk.x) throw bad('"privateJwk" is not the private key of "publicJwk"');
        return { ...k, privateKey };
      }),
    );
    this.keys.sort((a, b) => a.createdAt - b.createdAt);
  }

  private async save(): Promise<void> {
    if (!this.file) return;
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const doc = { keys: this.keys.map(({ privateKey: _omit, ...k }) => k) };
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(doc, null, 2), { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, this.file);
  }
}
