#!/usr/bin/env bash
# Put promtool at .tools/bin/promtool (`make promtool`), for the alert-rule tests.
#
# From Debian's `prometheus` package, fetched with `apt-get download` and unpacked with
# `dpkg -x` into a temporary directory: nothing is installed, no daemon starts, and only the
# promtool binary is kept. Does nothing when promtool is on PATH or already in .tools/bin.
#
# Without apt-get/dpkg, or when the download fails, it warns and exits 0 (the promtool tests
# then skip, saying why) — except under CI=true, where a missing promtool is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin

if command -v promtool >/dev/null 2>&1 || [ -x "$dest/promtool" ]; then
    exit 0
fi

give_up() {
    echo "make promtool: $*" >&2
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
    echo "make promtool: the promtool tests will skip" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
    || give_up "no apt-get/dpkg here: install promtool (Prometheus 2.x) on PATH yourself"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
download() { (cd "$work" && apt-get download -q prometheus) >/dev/null 2>&1; }
# The package lists may be missing or stale (a fresh machine): refresh them once and retry.
if ! download; then
    apt-get update -qq >/dev/null 2>&1 || true
    download || give_up "apt-get download prometheus failed"
fi
dpkg -x "$work"/prometheus_*.deb "$work/unpacked"
mkdir -p "$dest"
install -m 0755 "$work/unpacked/usr/bin/promtool" "$dest/promtool"
"$dest/promtool" --version 2>&1 | head -n 1
