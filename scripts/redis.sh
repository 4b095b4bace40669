#!/usr/bin/env bash
# Prints the path of a redis-server the queue tests and the README's queue demo can start: one on
# PATH, else Debian's redis-server package (with redis-tools, liblzf1 and libjemalloc2, which it
# links against) fetched and unpacked WITHOUT root into .cache/redis/ (git-ignored), run through a
# small wrapper that points LD_LIBRARY_PATH at the unpacked libraries. Safe to rerun: a finished
# unpack is reused. Exits 1 with the reason on stderr when neither can be had.
#
#   bash scripts/redis.sh                 # prints e.g. /repo/.cache/redis/bin/redis-server
#   $(bash scripts/redis.sh) --port 6390  # a throwaway server for the demo
#   CANDLEWICK_REDIS_UNPACK=1 bash scripts/redis.sh   # use the unpacked Debian package even with one on PATH
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/redis"
wrapper="$dir/bin/redis-server"

if [ -z "${CANDLEWICK_REDIS_UNPACK:-}" ] && command -v redis-server >/dev/null; then
  command -v redis-server
  exit 0
fi
if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi

packages=(redis-server redis-tools liblzf1 libjemalloc2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download needs no root (it writes into the current folder); where apt has no lists, or
# no apt at all, fetch the .deb files from the Debian mirror by the paths apt-cache knows, or fail.
if ! apt-get download "${packages[@]}" >"$work/apt.log" 2>&1; then
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  for p in "${packages[@]}"; do
    file=$(apt-cache show --no-all-versions "$p" 2>/dev/null | sed -n 's/^Filename: //p' | head -1)
    if [ -z "$file" ] || ! curl -fsSLo "$work/$(basename "$file")" "$mirror/$file"; then
      echo "redis.sh: could not fetch the Debian package $p (apt-get download said: $(tail -1 "$work/apt.log")); install redis-server or put one on PATH" >&2
      exit 1
    fi
  done
fi
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp/bin"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir.tmp/root"; done
libs=$(dirname "$(find "$dir.tmp/root" -name 'liblzf.so.1*' | head -1)")
cat >"$dir.tmp/bin/redis-server" <<EOF
#!/bin/sh
# Debian's redis-server, unpacked by scripts/redis.sh; its libraries are beside it.
here=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="\$here/root/${libs#"$dir.tmp/root/"}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/root/usr/bin/redis-server" "\$@"
EOF
chmod +x "$dir.tmp/bin/redis-server"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
"$wrapper" --version >/dev/null
echo "$wrapper"
