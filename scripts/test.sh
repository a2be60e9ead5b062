#!/usr/bin/env bash
# The one test command (`npm test`): installs what the tests need on a fresh
# machine, checks the contracts and generated code, type-checks, and runs
# every test against real servers on loopback. Tests start their own
# redis-server and FerretDB processes on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "npm packages"
npm ci --no-audit --no-fund --loglevel=error

step "redis-server and h2load (Debian: redis-server, nghttp2-client)"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
redis-server --version
h2load --version | head -n 1

step "FerretDB v1.24.2 (Go module proxy, cached)"
FERRETDB_BIN="$(bash scripts/build-ferretdb.sh)"
export FERRETDB_BIN
echo "$FERRETDB_BIN"

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
