"""Textual inversion fixtures and goldens: embeddings in both formats, and diffusers' prompt embeddings with them.

Run from the repository root (after scripts/make_fixtures.py has written test/fixtures/tiny-sd):

    .venv/bin/python scripts/fixture_textual_inversion.py

Writes test/fixtures/textual-inversion/:
  learned_embeds.safetensors  diffusers' format: {"<cat-toy>": f32 [1, 32]} (one vector)
  style-a1111.safetensors     AUTOMATIC1111's safetensors format: {"emb_params": f32 [3, 32]} (three vectors;
                              its token is the file's name, passed to diffusers as token="style-a1111")
  wide.safetensors            {"<wide>": f32 [1, 48]}: the wrong width for tiny-sd's 32-wide text encoder
and test/fixtures/goldens/textual_inversion.{json,safetensors}: after
`pipe.load_textual_inversion(learned_embeds)` and `pipe.load_textual_inversion(style-a1111, token="style-a1111")`,
for each prompt i: `ids_<i>` (i64 [77], tokenizer(maybe_convert_prompt(prompt)) padded to 77) and `prompt_embeds_<i>`
(f32 [1, 77, 32], pipe.encode_prompt(prompt, "cpu", 1, False)[0]); json: {prompts, tokens: {token: first id}}.
"""

import json
import os

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "test", "fixtures", "tiny-sd")
OUT = os.path.join(ROOT, "test", "fixtures", "textual-inversion")
GOLDENS = os.path.join(ROOT, "test", "fixtures", "goldens")

PROMPTS = [
    "a photo of <cat-toy>",
    "a style-a1111 painting of a <cat-toy> on a hill",
    "style-a1111",
    "a photo of a cat",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(50)
    diffusers_file = os.path.join(OUT, "learned_embeds.safetensors")
    a1111_file = os.path.join(OUT, "style-a1111.safetensors")
    save_file({"<cat-toy>": torch.randn(1, 32, generator=g)}, diffusers_file)
    save_file({"emb_params": torch.randn(3, 32, generator=g)}, a1111_file)
    save_file({"<wide>": torch.randn(1, 48, generator=g)}, os.path.join(OUT, "wide.safetensors"))

    pipe = StableDiffusionPipeline.from_pretrained(TINY, torch_dtype=torch.float32, safety_checker=None)
    pipe.load_textual_inversion(diffusers_file)
    pipe.load_textual_inversion(a1111_file, token="style-a1111")
    tensors = {}
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            converted = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
            ids = pipe.tokenizer(converted, padding="max_length", max_length=77, truncation=True).input_ids
            tensors[f"ids_{i}"] = torch.tensor(ids, dtype=torch.int64)
            tensors[f"prompt_embeds_{i}"] = pipe.encode_prompt(prompt, "cpu", 1, False)[0].contiguous()
            print(f"{prompt!r} -> {converted!r}: {ids[:12]}")
    save_file(tensors, os.path.join(GOLDENS, "textual_inversion.safetensors"))
    vocab = pipe.tokenizer.get_vocab()
    with open(os.path.join(GOLDENS, "textual_inversion.json"), "w", encoding="utf-8") as f:
        json.dump({"prompts": PROMPTS,
                   "tokens": {t: vocab[t] for t in ["<cat-toy>", "style-a1111", "style-a1111_1", "style-a1111_2"]},
                   "about": "pipe.load_textual_inversion(learned_embeds.safetensors); pipe.load_textual_inversion("
                            "style-a1111.safetensors, token='style-a1111'); prompt_embeds_i = pipe.encode_prompt("
                            "prompts[i], 'cpu', 1, False)[0]"}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
