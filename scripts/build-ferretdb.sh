#!/usr/bin/env bash
# Builds FerretDB v1.24.2 from the Go module proxy into $FC_BIN (cached) and
# prints the binary's path. The cache key includes a hash of
# scripts/ferretdb/main.go, so a change to it (e.g. the --handler flag) is
# rebuilt instead of served from an older binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FC_BIN="${FC_BIN:-$HOME/.cache/federation-core/bin}"
key="$(sha256sum "$here/ferretdb/main.go" | cut -c1-12)"
out="$FC_BIN/ferretdb-v1.24.2-$key"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$FC_BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/ferretdb/main.go" "$work/"
(
  cd "$work"
  go mod init fc-ferretdb >/dev/null 2>&1
  go get github.com/FerretDB/FerretDB@v1.24.2 >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1
  go build -o "$out.tmp.$$" .
) >&2
mv "$out.tmp.$$" "$out"
echo "$out"
