#!/bin/sh
# What the official image's entrypoint and build do: redis-server runs as `redis`, owns
# /data, and has protected mode off (it listens on the container's network, reached by name).
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    chown -R redis:redis /data 2>/dev/null || true
    config=""
    case "${1:-}" in -*|"") ;; *) config="$1"; shift ;; esac
    exec setpriv --reuid=redis --regid=redis --init-groups \
        redis-server ${config:+"$config"} --protected-mode no "$@"
fi
exec "$@"
