"""Seed corpora for the fuzz targets, from the test fixtures (test/fixtures, made by
scripts/make_fixtures.py). Writes fuzz/corpus/<target>/; run from the repository root:
python3 fuzz/seed_corpus.py. Standard library only."""

import hashlib
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "test/fixtures/tiny-sd"
CORPUS = ROOT / "fuzz/corpus"


def put(target: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def safetensors(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


# safetensors_header: each fixture's header alone (the data is left out to keep the repo small),
# and small complete files of every dtype the loader meets.
for rel in ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]:
    raw = (TINY / rel).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    put("safetensors_header", raw[: 8 + n])
put("safetensors_header", safetensors([("conv_in.weight", "F32", [2, 2], bytes(16)), ("conv_in.bias", "F16", [2], bytes(4))]))
put("safetensors_header", safetensors([("w", "BF16", [3], bytes(6)), ("ids", "I64", [1, 2], bytes(16)), ("s", "F64", [], bytes(8))]))
put("safetensors_header", safetensors([]))
put("safetensors_header", struct.pack("<Q", 2) + b"{}")

# config: the first byte picks the config type (see fuzz_targets/config.rs).
for selector, rel in enumerate(["model_index.json", "text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"]):
    put("config", bytes([selector]) + (TINY / rel).read_bytes())

# tokenizer: the golden prompts (accents, CJK, emoji, HTML entities, whitespace, over-long).
for prompt in json.loads((ROOT / "test/fixtures/goldens/tokens.json").read_text())["prompts"]:
    put("tokenizer", prompt["prompt"].encode())
