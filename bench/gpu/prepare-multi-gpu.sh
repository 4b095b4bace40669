#!/usr/bin/env bash
# Makes the carries of bench/gpu/multi-gpu.sh (issue 22) on the development machine, from the repository root, after
# bench/gpu/prepare-round10.sh has made .gpu/pkg (a fresh clone's packages), .gpu/node.xz and .gpu/whl:
#   .gpu/multi/candlewick.node.xz  the CUDA package's .node, from its tarball (xz: 12 MB against the tarball's 23)
#   .gpu/multi/dist.tar.xz         the main package's dist/, from its tarball
#   .gpu/multi/modules.tar.xz      node_modules/ with pngjs and BullMQ and everything BullMQ needs
#   .gpu/multi/redis.tar.xz        Debian's redis-server unpacked without root (scripts/redis.sh)
# With .gpu/node.xz, .gpu/whl and the tracked tree without the fixtures' safetensors it fits one call's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkg=.gpu/pkg; dest=.gpu/multi; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
[ -f $pkg/commit.txt ] || { echo "no $pkg: run bench/gpu/prepare-round10.sh first" >&2; exit 1; }
mkdir -p $dest
tar -C "$work" -xzf $pkg/candlewick-linux-x64-gnu-cuda-*.tgz
xz -T0 -6 -c "$work"/package/*.node > $dest/candlewick.node.xz
mkdir "$work/main" && tar -C "$work/main" -xzf "$(ls $pkg/candlewick-[0-9]*.tgz)"
tar -C "$work/main/package" -cJf $dest/dist.tar.xz dist
cp $pkg/commit.txt $dest/commit.txt
# BullMQ's dependency closure as npm installed it here (nested copies included), and pngjs.
node -e '
  const fs = require("fs"), path = require("path");
  const seen = new Set();
  const find = (name, from) => {
    for (let dir = from; ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, "node_modules", name);
      if (fs.existsSync(path.join(candidate, "package.json"))) return candidate;
      if (dir === path.dirname(dir)) throw new Error(`${name} not found from ${from}`);
    }
  };
  const walk = (dir) => {
    if (seen.has(dir)) return;
    seen.add(dir);
    const p = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    for (const dep of Object.keys(p.dependencies ?? {})) walk(find(dep, dir));
  };
  walk(find("bullmq", process.cwd()));
  walk(find("pngjs", process.cwd()));
  console.log([...seen].map((d) => path.relative(process.cwd(), d)).join("\n"));
' > "$work/modules.txt"
tar -cJf $dest/modules.tar.xz -T "$work/modules.txt"
redis=$(CANDLEWICK_REDIS_UNPACK=1 bash scripts/redis.sh)
"$redis" --version
tar -cJf $dest/redis.tar.xz .cache/redis
echo "modules: $(wc -l < "$work/modules.txt") packages"
du -sh $dest/* .gpu/node.xz .gpu/whl
