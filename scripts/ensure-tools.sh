#!/usr/bin/env bash
# Installs the named tools from Debian when they are missing, in one apt run:
#   scripts/ensure-tools.sh h2load postgresql ...
# Tools: h2load (nghttp2-client), redis-server, postgresql (initdb, pg_ctl,
# postgres under /usr/lib/postgresql/*/bin), chromium, etcd (etcd-server: the
# benchmark's etcd rows), jemalloc (libjemalloc2: the allocator the service is
# deployed with, for the benchmark). Prints nothing when
# everything is there; what it installs is reported on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in "$@"; do
  case "$tool" in
    h2load) command -v h2load >/dev/null || missing+=(nghttp2-client) ;;
    redis-server) command -v redis-server >/dev/null || missing+=(redis-server) ;;
    postgresql) compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || missing+=(postgresql) ;;
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    etcd) command -v etcd >/dev/null || missing+=(etcd-server) ;;
    jemalloc) compgen -G '/usr/lib/*-linux-gnu/libjemalloc.so.2' >/dev/null || missing+=(libjemalloc2) ;;
    *) echo "ensure-tools: unknown tool '$tool'" >&2; exit 2 ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-tools: installing ${missing[*]} (Debian)" >&2
  bash scripts/apt-install.sh "${missing[@]}" >&2
fi
