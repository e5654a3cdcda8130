#!/usr/bin/env bash
# Fetch the three JavaScript libraries the bertviz views need, so they run offline.
#
# bertviz's HTML asks cdnjs for require.js, d3 and jQuery. The app inlines local
# copies instead (explorer/bertviz_offline.py). They come from the npm registry
# at set-up time and land in explorer/static/vendor/ (git-ignored: the project
# does not commit third-party code).
#
#   bash scripts/vendor_js.sh          # idempotent: does nothing when already there
#   FORCE=1 bash scripts/vendor_js.sh  # fetch again
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=explorer/static/vendor
STAMP="$DEST/VERSIONS"
WANT="d3@5.7.0 jquery@2.2.4 requirejs@2.3.6"

fail() { echo "vendor_js.sh: $*" >&2; exit 1; }

if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && [ -s "$DEST/d3.min.js" ] && [ -s "$DEST/jquery.min.js" ] && [ -s "$DEST/require.js" ]; then
  echo "vendor_js.sh: $WANT already in $DEST"
  exit 0
fi

command -v npm >/dev/null 2>&1 \
  || fail "npm is not installed; install Node.js/npm (Debian: apt-get install npm), then run this script again. Without these files the bertviz views cannot be drawn offline."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "==> fetching $WANT from the npm registry"
# shellcheck disable=SC2086
(cd "$tmp" && timeout 180 npm pack --silent $WANT >/dev/null 2>"$tmp/npm.log") \
  || fail "npm pack failed (no access to the npm registry?): $(tail -n 3 "$tmp/npm.log" 2>/dev/null)"

extract() {  # tarball, path inside the package, output name, text that proves the version
  local tgz="$tmp/$1" inner="package/$2" out="$tmp/$3" proof="$4"
  [ -f "$tgz" ] || fail "npm did not produce $1"
  tar -xzf "$tgz" -O "$inner" >"$out" 2>/dev/null || fail "$1 has no $2"
  [ -s "$out" ] || fail "$2 in $1 is empty"
  grep -q -- "$proof" "$out" || fail "$2 in $1 does not look like the expected version ($proof)"
  sed -i '/^\/\/# sourceMappingURL=/d' "$out"  # no source-map request from the iframe
}
extract d3-5.7.0.tgz dist/d3.min.js d3.min.js 'version="5.7.0"'
extract jquery-2.2.4.tgz dist/jquery.min.js jquery.min.js 'jQuery v2.2.4'
extract requirejs-2.3.6.tgz require.js require.js "version = '2.3.6'"

mkdir -p "$DEST"
for f in d3.min.js jquery.min.js require.js; do
  mv -f "$tmp/$f" "$DEST/$f.part" && mv -f "$DEST/$f.part" "$DEST/$f"
done
printf '%s' "$WANT" >"$STAMP"
echo "==> $WANT installed in $DEST"
