#!/usr/bin/env bash
# fetch-deb.sh PACKAGE DEST: unpacks a Debian package into DEST (no root install, nothing
# outside DEST). Used for promtool (package prometheus) by `make test-rules`.
# `apt-get download` needs the package lists; on a fresh machine they may be empty, and as
# root this runs `apt-get update` once to fill them.
set -euo pipefail
pkg="$1"
dest="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
download() { (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/err"); }
if ! download; then
  if [ "$(id -u)" = 0 ]; then
    echo "fetch-deb: $pkg not found in the package lists; running apt-get update" >&2
    apt-get update -qq >/dev/null
    download || { cat "$tmp/err" >&2; exit 1; }
  else
    cat "$tmp/err" >&2
    echo "fetch-deb: cannot download $pkg; run 'sudo apt-get update' once and retry" >&2
    exit 1
  fi
fi
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "fetch-deb: $(basename "$tmp"/"$pkg"_*.deb) unpacked into $dest" >&2
