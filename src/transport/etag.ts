/**
 * If-None-Match (RFC 9110 13.1.2): `*` or a comma-separated list of entity
 * tags, compared weakly (a `W/` prefix is ignored on either side).
 */
export function etagMatches(ifNoneMatch: string | null, etag: string): boolean {
  if (ifNoneMatch === null || ifNoneMatch === "") return false;
  const want = weak(etag);
  for (const tag of ifNoneMatch.split(",")) {
    const t = tag.trim();
    if (t === "*" || weak(t) === want) return true;
  }
  return false;
}

function weak(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}
