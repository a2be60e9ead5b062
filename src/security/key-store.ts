import { createPrivateKey, createPublicKey, sign, type JsonWebKey, type KeyObject } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JSONWebKeySet, type JWK, type JWTPayload } from "jose";
import type { Clock } from "../clock.js";
import { ConfigError, signingKeySetProblem } from "../config.js";

/**
 * The federation's signing keys. This is the KMS seam: everything that
 * signs goes through these operations, so a cloud KMS adapter implements
 * this interface and private keys never leave it. The file store below is
 * the embedded default.
 *
 * The signing operations return promises so that a KMS adapter can sign
 * remotely; the file store signs synchronously and hands back an already
 * settled promise (an `await` of it is a microtask, not a thread-pool job).
 * Whatever signs, the output is a standard JWS (EdDSA, `kid` naming a key
 * in jwks()) that verifiers check with jose.
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
  /** node:crypto's handle on privateJwk, made once when the key is loaded or created. */
  readonly signer: KeyObject;
  /** Protected-header segments by `typ` (undefined: none): the same bytes for everything this key signs. */
  readonly headers: Map<string | undefined, string>;
}

const ALG = "EdDSA";

/**
 * JWS compact serialization (RFC 7515 §7.1), written here so that signing
 * is node:crypto's synchronous Ed25519 (`crypto.sign(null, input, key)`,
 * ~40 µs of CPU on the calling thread) rather than jose's WebCrypto path
 * (an async thread-pool job that competes with the server's own thread).
 * Verification stays with jose everywhere. The output is what jose's
 * SignJWT / CompactSign / FlattenedSign wrote before, byte for byte:
 *
 *   header    = base64url(JSON.stringify({ alg: "EdDSA", kid, typ? }))   (that key order)
 *   payload   = base64url(payload bytes)
 *   signature = base64url(Ed25519(key, ASCII(header + "." + payload)))
 *   compact   = header.payload.signature;  detached (RFC 7515 appendix F) = header..signature
 */
function headerSegment(key: LoadedKey, typ: string | undefined): string {
  let header = key.headers.get(typ);
  if (header === undefined) {
    const fields = typ === undefined ? { alg: ALG, kid: key.kid } : { alg: ALG, kid: key.kid, typ };
    header = Buffer.from(JSON.stringify(fields)).toString("base64url");
    key.headers.set(typ, header);
  }
  return header;
}

function signature(key: LoadedKey, header: string, payload: string): string {
  return sign(null, Buffer.from(`${header}.${payload}`, "latin1"), key.signer).toString("base64url");
}

const base64url = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");

/** The node:crypto private key of an Ed25519 private JWK (throws if it is not one). */
function signerOf(privateJwk: JWK): KeyObject {
  const key = createPrivateKey({ key: privateJwk as JsonWebKey, format: "jwk" });
  if (key.asymmetricKeyType !== "ed25519") throw new TypeError(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

/** A NumericDate claim as jose checks it. */
function numericDate(name: string, seconds: number): number {
  if (!Number.isFinite(seconds)) throw new TypeError(`"${name}" claim must be a finite number`);
  return seconds;
}

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

  // Synchronous signing (see headerSegment); `async` only to keep the KeyStore signature (and throw as a rejection).
  async signJwt(claims: JWTPayload, expiresAtMs: number, typ: string): Promise<string> {
    const key = this.current();
    // Claims as jose's SignJWT wrote them: the caller's, then iat and exp (in place if the caller set them).
    const body = JSON.stringify({
      ...claims,
      iat: numericDate("iat", Math.floor(this.clock.now() / 1000)),
      exp: numericDate("exp", Math.floor(expiresAtMs / 1000)),
    });
    const header = headerSegment(key, typ);
    const payload = Buffer.from(body).toString("base64url");
    return `${header}.${payload}.${signature(key, header, payload)}`;
  }

  async signCompact(payload: Uint8Array, typ: string): Promise<string> {
    const key = this.current();
    const header = headerSegment(key, typ);
    const encoded = base64url(payload);
    return `${header}.${encoded}.${signature(key, header, encoded)}`;
  }

  async signDetached(payload: Uint8Array): Promise<{ jws: string; kid: string }> {
    const key = this.current();
    const header = headerSegment(key, undefined);
    return { jws: `${header}..${signature(key, header, base64url(payload))}`, kid: key.kid };
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
    const privateJwk = await exportJWK(privateKey);
    const previous = this.keys.map((k) => ({ ...k, retiresAt: k.retiresAt ?? now + this.retireAfterMs }));
    this.keys = [
      ...previous.filter((k) => k.retiresAt > now),
      { kid, createdAt: now, retiresAt: undefined, privateJwk, publicJwk, signer: signerOf(privateJwk), headers: new Map() },
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
    this.keys = stored.map((k, n) => {
      const bad = (why: string) => new ConfigError(`${source}keys[${n}] (kid "${k.kid}"): ${why}`);
      let signer: KeyObject;
      try {
        signer = signerOf(k.privateJwk);
      } catch (err) {
        throw bad(`"privateJwk" is not a usable Ed25519 private key (${(err as Error).message})`);
      }
      // The public half is what verifiers get from jwks(): it must be this key's.
      const x = createPublicKey(signer).export({ format: "jwk" }).x;
      if (x !== k.publicJwk.x) throw bad('"privateJwk" is not the private key of "publicJwk"');
      return { ...k, signer, headers: new Map<string | undefined, string>() };
    });
    this.keys.sort((a, b) => a.createdAt - b.createdAt);
  }

  private async save(): Promise<void> {
    if (!this.file) return;
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const doc = { keys: this.keys.map(({ signer: _signer, headers: _headers, ...k }) => k) };
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(doc, null, 2), { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, this.file);
  }
}
