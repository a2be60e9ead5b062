import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * Certificates made with openssl at test time (no key material is ever
 * committed): a CA, a server certificate for 127.0.0.1, client certificates
 * with SPIFFE URI SANs, and hostile ones.
 */
export interface Pem {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly certFile: string;
  readonly keyFile: string;
}

export class TestPki {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), "fc-pki-"));

  ca(name: string): Pem {
    const keyFile = path.join(this.dir, `${name}.key`);
    const certFile = path.join(this.dir, `${name}.crt`);
    openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", `/CN=${name}`]);
    return this.read(certFile, keyFile);
  }

  /** A leaf certificate signed by `ca`, with the given subject alternative names. */
  leaf(name: string, ca: Pem, san: string, days = 2): Pem {
    const keyFile = path.join(this.dir, `${name}.key`);
    const csr = path.join(this.dir, `${name}.csr`);
    const certFile = path.join(this.dir, `${name}.crt`);
    const ext = path.join(this.dir, `${name}.ext`);
    writeFileSync(ext, `subjectAltName=${san}\n`);
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", csr, "-subj", `/CN=${name}`]);
    openssl(["x509", "-req", "-in", csr, "-CA", ca.certFile, "-CAkey", ca.keyFile, "-CAcreateserial", "-out", certFile, "-days", String(days), "-extfile", ext]);
    return this.read(certFile, keyFile);
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private read(certFile: string, keyFile: string): Pem {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile, keyFile };
  }
}

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: "ignore" });
}
