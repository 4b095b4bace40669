#!/usr/bin/env bash
# A copy of candle-kernels (the version in Cargo.lock) whose build script writes empty PTX
# strings instead of compiling candle's kernels: for scripts/cuda/check.sh's type check only
# (a library built against it would have no kernels). Prints the copy's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(awk '/^name = "candle-kernels"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-kernels-"$version" | head -1)
dst=$PWD/.cache/candle-kernels-stub-$version
if [ ! -f "$dst/.stubbed" ]; then
  rm -rf "$dst"
  cp -r "$src" "$dst"
  python3 - "$src" "$dst" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
consts = re.findall(r"^pub const ([A-Z_]+): &str", open(f"{src}/src/ptx.rs").read(), re.M)
body = "".join(f"pub const {c}: &str = \\\"\\\";\\n" for c in consts)
open(f"{dst}/build.rs", "w").write(
    "// Type-check stub: empty PTX (scripts/cuda/candle-kernels-stub.sh).\n"
    "fn main() {\n"
    '    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ptx.rs");\n'
    f'    std::fs::write(out, "{body}").unwrap();\n'
    "}\n")
# The stub's build script needs nothing: drop the build-dependencies (cudaforge).
toml = open(f"{dst}/Cargo.toml").read()
toml = re.sub(r"\n\[build-dependencies(\.[^\]]+)?\]\n(?:[^\[].*\n?)*", "\n", toml)
open(f"{dst}/Cargo.toml", "w").write(toml)
PY
  touch "$dst/.stubbed"
fi
echo "$dst"
