#!/bin/sh
# The part of the official image's entrypoint the compose file relies on: an empty $PGDATA is
# initialised with POSTGRES_USER (superuser), POSTGRES_PASSWORD (scram-sha-256 over TCP) and
# POSTGRES_DB, then the server runs as `postgres`, listening on every address.
set -eu
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ "${1:-}" = "postgres" ]; then
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    mkdir -p "$PGDATA" /run/postgresql
    chown postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
        pwfile="$(mktemp)"
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        chown postgres "$pwfile"
        as_postgres initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 -D "$PGDATA" > /dev/null
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        if [ "$db" != "postgres" ]; then
            echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
                | as_postgres postgres --single -D "$PGDATA" postgres > /dev/null
        fi
        echo "initialised $PGDATA: user $user, database $db"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses='*'
fi
exec "$@"
