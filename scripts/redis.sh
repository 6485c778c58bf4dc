#!/usr/bin/env bash
# Redis for the work-queue integration tests (crates/shoal/tests/it/queue.rs),
# which start their own throw-away `redis-server` on a loopback port.
#
#   scripts/redis.sh install   # Debian's redis-server package, unless redis-server and redis-cli are there
set -euo pipefail

case "${1:-}" in
install)
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        exit 0
    fi
    echo "redis.sh: installing Debian's redis-server package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
    # The package's own service is not needed: the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
    command -v redis-server >/dev/null
    ;;
*)
    echo "usage: redis.sh install" >&2
    exit 2
    ;;
esac
