#!/usr/bin/env bash
# Installs a built authorizer binary and what it needs at run time.
#   scripts/install.sh BINARY DESTDIR PREFIX [SYSCONFDIR]
# (`make install` calls it with the release binary; the tests with the debug one.)
#
#   PREFIX/bin/authorizer
#   PREFIX/share/authorizer/lua/*.lua              found by the binary from its own path
#   PREFIX/share/authorizer/redis.conf             a Redis configuration to start from
#   PREFIX/share/authorizer/rules.example.yaml     the default rules as a file
#   PREFIX/share/authorizer/README.md, ARCHITECTURE.md and docs/
#   PREFIX/share/authorizer/authorizer.env.example
#   PREFIX/lib/systemd/system/authorizer.service   ExecStart=PREFIX/bin/authorizer serve
#   SYSCONFDIR/authorizer/authorizer.env           only when absent (never overwrites local settings)
#
# Everything lands under DESTDIR (empty for the real thing), for packaging.
set -euo pipefail

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: $0 BINARY DESTDIR PREFIX [SYSCONFDIR]" >&2
    exit 2
fi
binary=$1
destdir=${2%/}
prefix=${3%/}
sysconfdir=${4:-/etc}
sysconfdir=${sysconfdir%/}
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "$prefix" in /*) ;; *) echo "PREFIX must be an absolute path, got '$prefix'" >&2; exit 2 ;; esac
case "$sysconfdir" in /*) ;; *) echo "SYSCONFDIR must be an absolute path, got '$sysconfdir'" >&2; exit 2 ;; esac
[ -x "$binary" ] || { echo "no executable at $binary (build it first: make release)" >&2; exit 2; }

bindir=$prefix/bin
datadir=$prefix/share/authorizer
unitdir=$prefix/lib/systemd/system

install -d "$destdir$bindir" "$destdir$datadir/lua" "$destdir$unitdir" "$destdir$sysconfdir/authorizer"
install -m 0755 "$binary" "$destdir$bindir/authorizer"
install -m 0644 "$source_dir"/Lua/*.lua "$destdir$datadir/lua/"
install -d "$destdir$datadir/docs"
install -m 0644 "$source_dir/redis.conf" "$source_dir/rules.example.yaml" "$source_dir/README.md" "$source_dir/ARCHITECTURE.md" "$destdir$datadir/"
install -m 0644 "$source_dir"/docs/*.md "$destdir$datadir/docs/"
install -d "$destdir$datadir/docs/webhooks"
install -m 0644 "$source_dir"/docs/webhooks/*.json "$destdir$datadir/docs/webhooks/"
install -m 0755 "$source_dir/scripts/webhook-receiver.py" "$destdir$datadir/"
install -m 0644 "$source_dir/ops/systemd/authorizer.env.example" "$destdir$datadir/"
sed -e "s|@BINDIR@|$bindir|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" -e "s|@DATADIR@|$datadir|g" \
    "$source_dir/ops/systemd/authorizer.service.in" > "$destdir$unitdir/authorizer.service"
chmod 0644 "$destdir$unitdir/authorizer.service"
if [ ! -e "$destdir$sysconfdir/authorizer/authorizer.env" ]; then
    install -m 0600 "$source_dir/ops/systemd/authorizer.env.example" "$destdir$sysconfdir/authorizer/authorizer.env"
    echo "installed $destdir$sysconfdir/authorizer/authorizer.env: set AUTHORIZER_REDIS_URL in it"
fi
echo "installed authorizer in $destdir$prefix (unit: $destdir$unitdir/authorizer.service)"
