/**
 * Builds the dashboard into dist/dashboard/ (`npm run build` runs this
 * after type-checking web/dashboard/ with its own tsconfig): one bundle and
 * one stylesheet with content hashes in their names (served immutable by
 * src/transport/dashboard-route.ts), and index.html naming them (served
 * no-cache). The new tree is written beside the old and swapped in, so a
 * build never leaves stale hashed files behind.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
export const DASHBOARD_OUT = path.join(here, "..", "..", "dist", "dashboard");

/** Builds the assets into `outDir`; answers the files written, relative to it. */
export async function buildDashboard(outDir = DASHBOARD_OUT): Promise<string[]> {
  const staging = `${outDir}.tmp-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  const result = await build({
    entryPoints: { app: path.join(here, "main.ts") },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    entryNames: "assets/[name]-[hash]",
    assetNames: "assets/[name]-[hash]",
    outdir: staging,
    metafile: true,
    legalComments: "none",
    logLevel: "warning",
  });
  const written = Object.keys(result.metafile.outputs).map((f) => path.relative(staging, path.resolve(f)).split(path.sep).join("/"));
  const script = written.find((f) => f.endsWith(".js"));
  const style = written.find((f) => f.endsWith(".css"));
  if (!script || !style) throw new Error(`esbuild wrote no script or stylesheet: ${written.join(", ")}`);
  const template = await readFile(path.join(here, "index.html"), "utf8");
  const html = template
    .replace("<!--style-->", `<link rel="stylesheet" href="${style}">`)
    .replace("<!--script-->", `<script type="module" src="${script}"></script>`);
  await writeFile(path.join(staging, "index.html"), html);
  // Two renames: a service starting meanwhile sees the old tree or the new one, hardly ever neither.
  const old = `${outDir}.old-${process.pid}`;
  await mkdir(path.dirname(outDir), { recursive: true });
  await rename(outDir, old).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
  await rename(staging, outDir);
  await rm(old, { recursive: true, force: true });
  return ["index.html", ...written].sort();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const files = await buildDashboard();
  console.log(`dashboard: ${files.length} files in ${path.relative(process.cwd(), DASHBOARD_OUT) || "."}`);
}
