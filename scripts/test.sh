#!/usr/bin/env bash
# The one test command (`npm test`): installs what the tests need on a fresh
# machine, checks the contracts and generated code, type-checks, and runs
# every test against real servers on loopback. Tests start their own
# redis-server and FerretDB processes on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# Debian packages, as root or through sudo (shared with the benchmark's set-up).
apt_install() { bash scripts/apt-install.sh "$@"; }

step "npm packages"
npm ci --no-audit --no-fund --loglevel=error

step "redis-server, h2load and PostgreSQL (Debian: redis-server, nghttp2-client, postgresql)"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v h2load >/dev/null || missing+=(nghttp2-client)
# PostgreSQL: throw-away clusters under FerretDB's postgresql handler (test/support/provision.ts).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
redis-server --version
h2load --version | head -n 1

step "chromium (Debian; test/browser-cors.test.ts drives it with playwright-core, no browser download)"
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
/usr/bin/chromium --version

step "FerretDB v1.24.2 (Go module proxy, cached)"
FERRETDB_BIN="$(bash scripts/build-ferretdb.sh)"
export FERRETDB_BIN
echo "$FERRETDB_BIN"

step "example clients: Python venv (PyPI) and Go plugins and modules (Go module proxy), cached"
# test/polyglot-clients.test.ts and test/example-agents.test.ts generate the stubs and run examples/ with these.
FC_CACHE="$HOME/.cache/federation-core"
export FC_PYTHON_VENV="$FC_CACHE/python-venv" FC_BIN="$FC_CACHE/bin"
if [ ! -f "$FC_PYTHON_VENV/.complete" ] || ! "$FC_PYTHON_VENV/bin/python3" -c 'import mcp' 2>/dev/null; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
  rm -rf "$FC_PYTHON_VENV"
  python3 -m venv "$FC_PYTHON_VENV"
  "$FC_PYTHON_VENV/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools googleapis-common-protos mcp
  touch "$FC_PYTHON_VENV/.complete"
fi
"$FC_PYTHON_VENV/bin/python3" -c 'import grpc, grpc_tools, google.api.annotations_pb2, mcp; print("grpcio", grpc.__version__)'
"$FC_BIN/protoc-gen-go" --version 2>/dev/null | grep -qx 'protoc-gen-go v1.36.12' ||
  GOBIN="$FC_BIN" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
"$FC_BIN/protoc-gen-go-grpc" --version 2>/dev/null | grep -qx 'protoc-gen-go-grpc 1.6.2' ||
  GOBIN="$FC_BIN" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
"$FC_BIN/protoc-gen-go" --version && "$FC_BIN/protoc-gen-go-grpc" --version
# Download the client's modules and compile them now (into the Go build cache), not during the tests.
(cd examples/go-client && go mod download && go build google.golang.org/grpc google.golang.org/grpc/credentials/insecure google.golang.org/genproto/googleapis/api/annotations google.golang.org/protobuf/types/known/durationpb google.golang.org/protobuf/types/known/emptypb google.golang.org/protobuf/types/known/structpb google.golang.org/protobuf/types/known/timestamppb)
# examples/go-agent requires the same module versions, so its build is a link from that cache.
(cd examples/go-agent && go mod download)

step "grpcurl v1.9.3 (Go module proxy, cached)"
GRPCURL_BIN="$(bash scripts/build-grpcurl.sh)"
export GRPCURL_BIN
echo "$GRPCURL_BIN"

step "buf lint"
npx buf lint

step "buf generate leaves gen/ unchanged"
npx buf generate
if [ -d .git ] && [ -n "$(git status --porcelain -- gen)" ]; then
  git status --porcelain -- gen
  echo "gen/ is stale: run 'npm run generate' and commit gen/" >&2
  exit 1
fi

step "type-check"
npx tsc --noEmit -p tsconfig.json
mkdir -p .test-results

step "benchmark smoke (npm run bench -- --quick: every scenario runs, no event lost; no speed asserted)"
npm run bench --silent -- --quick > .test-results/bench-quick.log 2>&1 || { cat .test-results/bench-quick.log; echo "benchmark smoke failed" >&2; exit 1; }
tail -n 3 .test-results/bench-quick.log

step "soak, short form (npm run soak -- --short: ~75 s, two replicas on FerretDB/PostgreSQL + Redis, each restarted; fails on a lost registration or event or a leak; the p99 ratio is held by the long form)"
npm run soak --silent -- --short > .test-results/soak-short.log 2>&1 || { cat .test-results/soak-short.log; echo "soak (short form) failed" >&2; exit 1; }
grep -A 20 '^| check' .test-results/soak-short.log || true

step "tests"
mkdir -p .test-results
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.test-results/vitest.json || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(".test-results/vitest.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`\ntests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  if (r.numTotalTests === 0) { console.error("no test ran"); process.exit(1); }
' || status=1
exit $status
