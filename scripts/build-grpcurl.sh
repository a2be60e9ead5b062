#!/usr/bin/env bash
# Builds grpcurl v1.9.3 from the Go module proxy into $FC_BIN (cached); the
# reflection tests drive the real client, with no .proto files.
set -euo pipefail
FC_BIN="${FC_BIN:-$HOME/.cache/federation-core/bin}"
out="$FC_BIN/grpcurl-v1.9.3"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$FC_BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# go install names the binary "grpcurl"; it is built aside, then renamed
# within $FC_BIN, so a half-copied file is never taken for the cached one.
GOBIN="$work" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3 >&2
cp "$work/grpcurl" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
