#!/usr/bin/env bash
# A private, throw-away PostgreSQL cluster for the integration tests
# (fixtures/django_pg), on a loopback port with trust authentication.
#
#   scripts/postgres.sh install        # Debian's postgresql package, unless its binaries are there
#   scripts/postgres.sh start DIR PORT # initdb DIR/data, start on 127.0.0.1:PORT; socket in DIR/socket
#   scripts/postgres.sh stop DIR       # stop it (the caller removes DIR)
#
# postgres refuses to run as root: as root, initdb and postgres run as the
# `postgres` user (runuser), and DIR is handed to that user.
set -euo pipefail

bindir() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$found" || ! -x "$found/initdb" ]]; then
        echo "postgres.sh: no PostgreSQL server under /usr/lib/postgresql/*/bin: run scripts/postgres.sh install" >&2
        return 1
    fi
    echo "$found"
}

as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
install)
    if bindir >/dev/null 2>&1; then
        exit 0
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    bindir >/dev/null
    ;;
start)
    dir="${2:?usage: postgres.sh start DIR PORT}"
    port="${3:?usage: postgres.sh start DIR PORT}"
    bin="$(bindir)"
    mkdir -p "$dir/socket"
    if [[ "$(id -u)" == 0 ]]; then
        chown -R postgres: "$dir"
    fi
    chmod 700 "$dir"
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 || {
        echo "postgres.sh: initdb failed:" >&2
        cat "$dir/initdb.log" >&2
        exit 1
    }
    # Throw-away data: no fsync. Only loopback TCP and the private socket.
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-p $port -k $dir/socket -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || {
        echo "postgres.sh: the server did not start on 127.0.0.1:$port:" >&2
        cat "$dir/server.log" >&2
        exit 1
    }
    echo "$port" >"$dir/port"
    ;;
stop)
    dir="${2:?usage: postgres.sh stop DIR}"
    bin="$(bindir)"
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null
    fi
    ;;
*)
    echo "usage: postgres.sh install | start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
