#!/usr/bin/env bash
# Installs Debian packages, as root or through sudo: scripts/apt-install.sh PACKAGE...
# The one install step shared by scripts/test.sh and scripts/ensure-tools.sh
# (which the benchmark and the test support call on first use).
set -euo pipefail
[ $# -gt 0 ] || exit 0
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
