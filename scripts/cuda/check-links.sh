#!/usr/bin/env bash
# Would this CUDA build load on the GPU machine? Checks a linked CUDA artefact (the .node, or
# the core's examples) the way the dynamic loader will see it there:
#   1. it has NEEDED libcuda.so.1, so the loader opens the driver's library at all;
#   2. every driver function it calls (undefined cu* symbols) is defined by the toolkit's stub
#      libcuda (made from cuda.h by toolkit.sh), i.e. is a function the driver provides;
#   3. `ldd -r` with the toolkit's libraries (the stub standing in for the driver) finds every
#      library and leaves no symbol undefined but Node-API's napi_* (the runtime provides those).
# A .node linked against an empty stub failed 1 and 3 ("undefined symbol: cuCtxGetCurrent" on
# the H200). Usage: check-links.sh FILE...   (CUDA_HOME: from toolkit.sh when unset)
#        check-links.sh --self-test: links a one-call library against an empty libcuda stub (as
#        the broken build was) and against the toolkit's stub; fails unless only the first is refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { echo "usage: check-links.sh FILE..." >&2; exit 2; }
CUDA_HOME=${CUDA_HOME:-$(bash scripts/cuda/toolkit.sh)}
stub=$CUDA_HOME/lib64/stubs/libcuda.so
if [ "${1:-}" = --self-test ]; then
  dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
  mkdir "$dir/empty"
  echo 'void candlewick_cuda_stub(void) {}' > "$dir/empty.c"
  echo 'int cuCtxGetCurrent(void **); int call(void) { void *c; return cuCtxGetCurrent(&c); }' > "$dir/call.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/empty/libcuda.so" "$dir/empty.c"
  cc -shared -fPIC -o "$dir/broken.so" "$dir/call.c" -L"$dir/empty" -Wl,--as-needed -lcuda
  cc -shared -fPIC -o "$dir/linked.so" "$dir/call.c" -L"$CUDA_HOME/lib64/stubs" -Wl,--as-needed -lcuda
  if bash "$0" "$dir/broken.so" >/dev/null 2>&1; then echo "check-links self-test: a library without NEEDED libcuda.so.1 passed" >&2; exit 1; fi
  bash "$0" "$dir/linked.so" >/dev/null || { echo "check-links self-test: a correctly linked library was refused" >&2; exit 1; }
  echo "check-links self-test: ok (refuses a library linked against an empty stub)"
  exit 0
fi
status=0
fail() { echo "check-links: $file: $*" >&2; status=1; }
for file in "$@"; do
  [ -f "$file" ] || { fail "no such file"; continue; }
  needed=$(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  grep -qx 'libcuda.so.1' <<<"$needed" || fail "no NEEDED libcuda.so.1 (NEEDED: $(echo $needed))"
  calls=$(nm -D --undefined-only "$file" | awk '{print $NF}' | sed 's/@.*//' | grep -E '^cu[A-Z]' | sort -u || true)
  [ -n "$calls" ] || fail "calls no driver function (cu*): not a CUDA build?"
  unknown=$(comm -23 <(echo "$calls") <(nm -D --defined-only "$stub" | awk '{print $NF}' | sort -u))
  [ -z "$unknown" ] || fail "driver functions the stub (cuda.h) does not define: $(echo $unknown)"
  report=$(LD_LIBRARY_PATH=$CUDA_HOME/lib64/stubs:$CUDA_HOME/lib64 ldd -r "$file" 2>&1) || fail "ldd -r failed: $report"
  missing=$(grep 'not found' <<<"$report" || true)
  [ -z "$missing" ] || fail "libraries not found: $missing"
  undefined=$(grep -o 'undefined symbol: [^ ,]*' <<<"$report" | awk '{print $3}' | grep -v '^napi_' | sort -u || true)
  [ -z "$undefined" ] || fail "symbols no library defines: $(echo $undefined | head -c 600)"
  [ "$status" -ne 0 ] || echo "check-links: $file: NEEDED libcuda.so.1, $(echo "$calls" | wc -l) driver functions, all resolved"
done
exit $status
