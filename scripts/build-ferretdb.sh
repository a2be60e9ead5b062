#!/usr/bin/env bash
# Builds FerretDB v1.24.2 from the Go module proxy into $FC_BIN (cached).
set -euo pipefail
FC_BIN="${FC_BIN:-$HOME/.cache/federation-core/bin}"
out="$FC_BIN/ferretdb-v1.24.2"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$FC_BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$(dirname "$0")/ferretdb/main.go" "$work/"
(
  cd "$work"
  go mod init fc-ferretdb >/dev/null 2>&1
  go get github.com/FerretDB/FerretDB@v1.24.2 >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1
  go build -o "$out.tmp" .
) >&2
mv "$out.tmp" "$out"
echo "$out"
