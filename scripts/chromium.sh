#!/usr/bin/env bash
# Prints the path of a Chromium that runs headless, for the page's browser test (test/page.test.ts):
# one on PATH (chromium, chromium-browser, google-chrome), else Debian's chromium package with
# those of its library dependencies that are not installed, fetched with apt-get download and
# unpacked WITHOUT root into chromium/ of the download cache that outlives a clone
# (scripts/cache-dir.sh: ~/.cache/candlewick, else the clone's .cache/), run through a small
# wrapper that points LD_LIBRARY_PATH at the unpacked libraries. The dependencies are walked from
# chromium through apt-cache depends (Depends and Pre-Depends; of alternatives, none when one is
# installed, else the first), keeping only lib* packages that dpkg does not have installed. Where
# apt has no lists that know chromium, lists of its own are made (apt-get update into the cache,
# no root). Safe to rerun: a finished unpack is reused, and two at once take turns (flock). Exits
# 1 with the reason on stderr when no browser can be had.
#
#   bash scripts/chromium.sh                 # prints e.g. ~/.cache/candlewick/chromium/bin/chromium
#   CANDLEWICK_CHROMIUM_UNPACK=1 bash scripts/chromium.sh   # unpack Debian's even with one on PATH
set -euo pipefail
cache=$(bash "$(dirname "$0")/cache-dir.sh")
dir="$cache/chromium"
wrapper="$dir/bin/chromium"
fail() { echo "chromium.sh: $*" >&2; exit 1; }

if [ -z "${CANDLEWICK_CHROMIUM_UNPACK:-}" ]; then
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null && "$name" --version >/dev/null 2>&1; then
      command -v "$name"
      exit 0
    fi
  done
fi
works() { [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; }
if works; then
  echo "$wrapper"
  exit 0
fi
# One fetch at a time (scripts/test-all.sh starts one early; the test asks again): wait for the
# other, then use what it unpacked.
if command -v flock >/dev/null; then
  exec 9>"$cache/chromium.lock"
  flock 9
  if works; then
    echo "$wrapper"
    exit 0
  fi
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || fail "no chromium on PATH and no apt-get / dpkg-deb to fetch Debian's (install chromium)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's own lists where they know chromium; else lists of our own, made without root (apt-get
# update into a folder under .cache/chromium, with the machine's sources).
apt=(-o Debug::NoLocking=1)
if [ -z "$(apt-cache policy chromium 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; then
  state="$cache/chromium-apt"
  mkdir -p "$state/lists/partial" "$state/archives/partial"
  apt=(-o Debug::NoLocking=1 -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state" -o APT::Sandbox::User="$(id -un)")
  apt-get "${apt[@]}" update >"$work/update.log" 2>&1 || fail "no chromium on PATH, and apt-get update (into $state) failed: $(tail -1 "$work/update.log")"
  [ -n "$(apt-cache "${apt[@]}" policy chromium 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ] ||
    fail "no chromium on PATH, and apt knows no chromium package (is this Debian, with its main archive in the sources?)"
fi

# The closure: chromium, chromium-common and the lib* packages they need that are not installed.
declare -A installed seen
while read -r name status; do [ "$status" = installed ] && installed[$name]=1; done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' 2>/dev/null)
queue=(chromium)
packages=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  [ -n "${seen[$p]:-}" ] && continue
  seen[$p]=1
  [ -n "${installed[$p]:-}" ] && continue
  case "$p" in lib* | chromium | chromium-common) ;; *) continue ;; esac
  packages+=("$p")
  # One line per dependency: "a", or "a|b|c" for alternatives ("|Depends:" lines continue a group).
  groups=$(apt-cache "${apt[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$p" 2>/dev/null | awk '
    /^ [ |](Pre)?Depends: / { group = group (group == "" ? "" : "|") $2; if (substr($1, 1, 1) != "|") { print group; group = "" } }')
  while IFS= read -r group; do
    [ -n "$group" ] || continue
    ok=
    first=
    IFS='|' read -ra alternatives <<<"$group"
    for a in "${alternatives[@]}"; do
      case "$a" in "<"*) continue ;; esac # a virtual package: its providers are alternatives of their own
      if [ -n "${installed[$a]:-}" ]; then ok=1; break; fi
      [ -n "$first" ] || first=$a
    done
    [ -n "$ok" ] || [ -z "$first" ] || queue+=("$first")
  done <<<"$groups"
done

cd "$work"
# apt-get download needs no root (it writes into the current folder).
apt-get "${apt[@]}" download "${packages[@]}" >"$work/apt.log" 2>&1 ||
  fail "could not fetch Debian's packages (${packages[*]}): $(tail -1 "$work/apt.log"); install chromium or put one on PATH"
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp/bin"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir.tmp/root"; done
[ -x "$dir.tmp/root/usr/lib/chromium/chromium" ] || fail "the chromium package has no usr/lib/chromium/chromium"
# Every folder of the unpacked packages holding shared libraries (libpulse0 keeps one in
# pulseaudio/), for the wrapper's LD_LIBRARY_PATH; chromium's own are found by its RUNPATH.
libdirs=$(cd "$dir.tmp/root" && find . -path ./usr/lib/chromium -prune -o -name 'lib*.so*' -printf '%h\n' | sort -u | sed 's|^\./||' | tr '\n' ' ')
cat >"$dir.tmp/bin/chromium" <<'EOF'
#!/bin/sh
# Debian's chromium, unpacked by scripts/chromium.sh with the libraries it needs beside it.
here=$(cd "$(dirname "$0")/.." && pwd)
lib=
for d in @LIBDIRS@; do lib="$lib$here/root/$d:"; done
LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:-}" exec "$here/root/usr/lib/chromium/chromium" "$@"
EOF
sed -i "s|@LIBDIRS@|$libdirs|" "$dir.tmp/bin/chromium"
chmod +x "$dir.tmp/bin/chromium"
lib=
for d in $libdirs; do lib="$lib$dir.tmp/root/$d:"; done
missing=$(LD_LIBRARY_PATH="$lib" ldd "$dir.tmp/root/usr/lib/chromium/chromium" | sed -n 's/^\s*\(\S*\) => not found/\1/p' | tr '\n' ' ')
[ -z "$missing" ] || fail "Debian's chromium unpacked, but these libraries are still missing: $missing"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
"$wrapper" --version >/dev/null 2>&1 || fail "$wrapper --version failed: $("$wrapper" --version 2>&1 | tail -1)"
echo "$wrapper"
