"""Check (writes nothing) that the sharded folders candlewick's tests make are diffusers' format.

crates/candlewick-core/tests/sharded_weights.rs and test/hub.test.ts split tiny-sd's UNet into
shards themselves: tensors in sorted-name order, in chunks, `diffusion_pytorch_model[.fp16]-0000i-of-0000n
.safetensors` (metadata {"format": "pt"}) and an index
`diffusion_pytorch_model.safetensors.index[.fp16].json` = {"metadata": {"total_size"}, "weight_map"}.
This writes the same split with the safetensors package and checks that diffusers'
`from_pretrained` loads it (plain and fp16 variant) to exactly the single file's tensors, and that
diffusers' own `save_pretrained(max_shard_size=...)` uses those index and shard names.

Run: .venv/bin/python scripts/fixture_sharded.py (make_fixtures.py runs it too). Takes seconds.
"""

import json
import math
import os
import re
import shutil
import tempfile

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_UNET = os.path.join(ROOT, "test", "fixtures", "tiny-sd", "unet")
STEM = "diffusion_pytorch_model"


def write_shards(single, out_dir, n, variant=None):
    """The split the tests make (sharded_weights.rs `write_shards`, hub.test.ts `shard`)."""
    tensors = load_file(single)
    names = sorted(tensors)
    per = math.ceil(len(names) / n)
    suffix = f".{variant}" if variant else ""
    weight_map, total = {}, 0
    for i in range(n):
        # diffusers 0.42.1 puts the variant before the shard number (transformers after it).
        shard = f"{STEM}{suffix}-{i + 1:05d}-of-{n:05d}.safetensors"
        chunk = {name: tensors[name] for name in names[i * per:(i + 1) * per]}
        save_file(chunk, os.path.join(out_dir, shard), metadata={"format": "pt"})
        for name, t in chunk.items():
            weight_map[name] = shard
            total += t.numel() * t.element_size()
    with open(os.path.join(out_dir, f"{STEM}.safetensors.index{suffix}.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def assert_same(a, b, what):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), what
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{what}: {k} differs"


def check(tmp):
    for n, variant, dtype in [(3, None, torch.float32), (2, "fp16", torch.float16)]:
        out = os.path.join(tmp, f"unet-{variant}")
        os.makedirs(out)
        shutil.copy(os.path.join(TINY_UNET, "config.json"), out)
        single = os.path.join(TINY_UNET, f"{STEM}.{variant}.safetensors" if variant else f"{STEM}.safetensors")
        write_shards(single, out, n, variant)
        ref = UNet2DConditionModel.from_pretrained(TINY_UNET, variant=variant, torch_dtype=dtype)
        got = UNet2DConditionModel.from_pretrained(out, variant=variant, torch_dtype=dtype)
        assert_same(ref, got, f"{n} shards, variant {variant}")
        # diffusers' own sharded save: the index and shard names the tests use.
        own = os.path.join(tmp, f"own-{variant}")
        ref.save_pretrained(own, variant=variant, max_shard_size="1MB")
        suffix = f".{variant}" if variant else ""
        with open(os.path.join(own, f"{STEM}.safetensors.index{suffix}.json")) as f:
            index = json.load(f)
        assert set(index) == {"metadata", "weight_map"} and "total_size" in index["metadata"], index.keys()
        shards = sorted(set(index["weight_map"].values()))
        pattern = re.compile(rf"{STEM}{re.escape(suffix)}-\d{{5}}-of-{len(shards):05d}\.safetensors")
        assert len(shards) > 1 and all(pattern.fullmatch(s) for s in shards), shards
        assert sorted(f for f in os.listdir(own) if f.endswith(".safetensors")) == shards
        print(f"sharded ({variant or 'full precision'}): {n} shards load to the single file's tensors; "
              f"diffusers saves {len(shards)} shards under the same names")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check(tmp)


if __name__ == "__main__":
    main()
