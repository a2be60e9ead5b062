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
      await store.load(JSON.parse(opts.fromEnv) as { keys: StoredKey[] });
      return store;
    }
    const file = path.join(opts.dataDir, "signing-keys.json");
    const store = new FileKeyStore(file, opts.clock, opts.retireAfterMs);
    let text: string | undefined;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (text) await store.load(JSON.parse(text) as { keys: StoredKey[] });
    else await store.rotate();
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

  private async load(doc: { keys: StoredKey[] }): Promise<void> {
    if (!Array.isArray(doc.keys) || doc.keys.length === 0) throw new Error("signing key set is empty");
    this.keys = await Promise.all(
      doc.keys.map(async (k) => ({ ...k, privateKey: (await importJWK(k.privateJwk, ALG)) as CryptoKey })),
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
