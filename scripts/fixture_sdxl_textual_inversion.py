"""SDXL textual inversion fixtures and goldens: clip_l/clip_g embeddings, and diffusers' (and compel's) prompt
embeddings with them on the committed tiny SDXL base and refiner (test/fixtures/tiny-sdxl, tiny-sdxl-refiner).

Run from the repository root (after fixture_families.py has written the tiny SDXL models; CPU, a few seconds):

    .venv/bin/python scripts/fixture_sdxl_textual_inversion.py

Writes test/fixtures/textual-inversion/ (SDXL's format, as AUTOMATIC1111, ComfyUI and civitai write it):
  sdxl-toy.safetensors    {"clip_l": f32 [1, 32], "clip_g": f32 [1, 32]} (one vector; loaded with token="<sdxl-toy>")
  sdxl-style.safetensors  {"clip_l": f32 [3, 32], "clip_g": f32 [3, 32]} (three vectors; its token is the file's
                          name, passed to diffusers as token="sdxl-style")
  sdxl-wide.safetensors   {"clip_l": f32 [1, 32], "clip_g": f32 [1, 48]}: clip_g the wrong width for text_encoder_2

Each file is loaded as diffusers documents for SDXL, two calls:

    pipe.load_textual_inversion(sd["clip_g"], token=token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    pipe.load_textual_inversion(sd["clip_l"], token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)

(the refiner, which has text_encoder_2 alone, the first call only). Then test/fixtures/goldens/
sdxl_textual_inversion.{json,safetensors}:
  plain cases: `pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
               negative_prompt=...)` (maybe_convert_prompt per tokenizer inside it): `prompt_embeds_<case>`
               [1, 77, 64 (refiner 32)], `pooled_<case>` [1, 32], `negative_prompt_embeds_<case>`, `negative_pooled_<case>`
               (zeros when there is no negative prompt: force_zeros_for_empty_prompt);
  weighted case: compel 2.5.1's CompelForSDXL as scripts/fixture_sdxl_prompt_weighting.py builds it, each Compel given a
               textual inversion manager that spells out multi-vector tokens with its own tokenizer (compel's
               DiffusersTextualInversionManager uses pipe.tokenizer for both; this one is its code with the Compel's
               tokenizer): same keys;
  pipeline:    the base, Euler, 2 steps, 64x64, guidance 5, fixed initial latents, prompt= and negative_prompt= of the
               case named in json["pipeline"]: `initial_latents`, `latents_step_<i>`, `image_u8` (HWC, round(x*255));
  json:        {cases: [{name, model, prompt, negative_prompt?, parts?}], tokens: {tokenizer, tokenizer_2: {token: id}},
                pipeline: {...}}.
"""

import json
import os
import sys

import torch
from compel.embeddings_provider import BaseTextualInversionManager
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_sdxl_prompt_weighting as weighting  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "test", "fixtures")
OUT = os.path.join(FIXTURES, "textual-inversion")
GOLDENS = os.path.join(FIXTURES, "goldens")
D = 1 / 1.1  # A1111's square-bracket multiplier

# (file, token) as the tests load them: the first with a token given, the second named after its file.
EMBEDDINGS = [("sdxl-toy.safetensors", "<sdxl-toy>"), ("sdxl-style.safetensors", "sdxl-style")]
# name, model, prompt, negative prompt (None: zeros), weighted fragments (A1111's parse of the prompt, one BREAK part)
CASES = [
    ("toy", "tiny-sdxl", "a photo of <sdxl-toy>", "blurry", None),
    ("both", "tiny-sdxl", "a sdxl-style painting of a <sdxl-toy> on a hill", "sdxl-style", None),
    ("zeros", "tiny-sdxl", "sdxl-style", None, None),
    ("plain_words", "tiny-sdxl", "a photo of a cat", "blurry", None),
    ("weighted", "tiny-sdxl", "a (sdxl-style:1.2) painting of a [<sdxl-toy>] on a hill", "blurry",
     [[("a ", 1.0), ("sdxl-style", 1.2), (" painting of a ", 1.0), ("<sdxl-toy>", D), (" on a hill", 1.0)]]),
    ("refiner", "tiny-sdxl-refiner", "a sdxl-style painting of a <sdxl-toy>", "sdxl-style", None),
]
PIPELINE_CASE = "both"


class TokenizerTextualInversionManager(BaseTextualInversionManager):
    """compel's DiffusersTextualInversionManager with the Compel's own tokenizer (SDXL's two differ)."""

    def __init__(self, pipe, tokenizer):
        self.pipe, self.tokenizer = pipe, tokenizer

    def expand_textual_inversion_token_ids_if_necessary(self, token_ids):
        if len(token_ids) == 0:
            return token_ids
        prompt = self.tokenizer.decode(token_ids)
        prompt = self.pipe.maybe_convert_prompt(prompt, self.tokenizer)
        return self.tokenizer.encode(prompt, add_special_tokens=False)


def make_embeddings():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(52)
    save_file({"clip_l": torch.randn(1, 32, generator=g), "clip_g": torch.randn(1, 32, generator=g)},
              os.path.join(OUT, "sdxl-toy.safetensors"))
    save_file({"clip_l": torch.randn(3, 32, generator=g), "clip_g": torch.randn(3, 32, generator=g)},
              os.path.join(OUT, "sdxl-style.safetensors"))
    save_file({"clip_l": torch.randn(1, 32, generator=g), "clip_g": torch.randn(1, 48, generator=g)},
              os.path.join(OUT, "sdxl-wide.safetensors"))


def load_embeddings(pipe):
    for file, token in EMBEDDINGS:
        sd = load_file(os.path.join(OUT, file))
        pipe.load_textual_inversion(sd["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
        if pipe.text_encoder is not None:
            pipe.load_textual_inversion(sd["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)


@torch.no_grad()
def weighted_embeddings(pipe, prompt, prompt_parts, negative):
    """CompelForSDXL on A1111's fragments, each Compel spelling out multi-vector tokens with its tokenizer."""
    texts = {"prompt": {"text": prompt, "parts": prompt_parts},
             "negative_prompt": {"text": negative, "parts": [[(negative, 1.0)]]}}
    make = weighting.make_compel

    def make_compel(tokenizer, text_encoder, pooled, clip_skip):
        compel = make(tokenizer, text_encoder, pooled, clip_skip)
        compel.conditioning_provider.textual_inversion_manager = TokenizerTextualInversionManager(pipe, tokenizer)
        return compel

    weighting.make_compel = make_compel
    try:
        return texts, weighting.sdxl_embeddings(pipe, texts, None)
    finally:
        weighting.make_compel = make


def main():
    make_embeddings()
    pipes = {
        "tiny-sdxl": StableDiffusionXLPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl")),
        "tiny-sdxl-refiner": StableDiffusionXLImg2ImgPipeline.from_pretrained(
            os.path.join(FIXTURES, "tiny-sdxl-refiner")),
    }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
        load_embeddings(pipe)
    tensors, cases, of = {}, [], {}
    for name, model, prompt, negative, parts in CASES:
        pipe = pipes[model]
        if parts is None:
            with torch.no_grad():
                embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
                    prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                    negative_prompt=negative)
        else:
            embeds, pooled, negative_embeds, negative_pooled = weighted_embeddings(pipe, prompt, parts, negative)[1]
        of[name] = embeds
        tensors.update({f"prompt_embeds_{name}": embeds, f"pooled_{name}": pooled,
                        f"negative_prompt_embeds_{name}": negative_embeds, f"negative_pooled_{name}": negative_pooled})
        case = {"name": name, "model": model, "prompt": prompt}
        if negative is not None:
            case["negative_prompt"] = negative
        if parts is not None:
            case["parts"] = parts
        cases.append(case)
        print(f"{name}: {prompt!r} -> {pipe.maybe_convert_prompt(prompt, pipe.tokenizer_2)!r}, "
              f"prompt_embeds {tuple(embeds.shape)}")
    # The embeddings matter: the token's prompt differs from plain words', and a weight changes it.
    assert not torch.allclose(of["toy"], of["plain_words"], atol=1e-4)
    plain_weighted = pipes["tiny-sdxl"].encode_prompt("a sdxl-style painting of a <sdxl-toy> on a hill", device="cpu",
                                                      num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    assert not torch.allclose(plain_weighted, of["weighted"], atol=1e-4), "the weights changed nothing"

    pipe, steps, guidance, size = pipes["tiny-sdxl"], 2, 5.0, 64
    case = next(c for c in cases if c["name"] == PIPELINE_CASE)
    g = torch.Generator().manual_seed(43)
    initial = torch.randn(1, pipe.unet.config.in_channels, size // pipe.vae_scale_factor,
                          size // pipe.vae_scale_factor, generator=g)
    latents, _, image_u8 = weighting.run_pipeline(pipe, initial, steps, guidance, size, prompt=case["prompt"],
                                                  negative_prompt=case["negative_prompt"])
    tensors.update({"initial_latents": initial, "image_u8": image_u8})
    tensors.update({f"latents_step_{i}": v for i, v in latents.items()})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()},
              os.path.join(GOLDENS, "sdxl_textual_inversion.safetensors"))
    tokens = {}
    for key in ("tokenizer", "tokenizer_2"):
        vocab = getattr(pipes["tiny-sdxl"], key).get_vocab()
        tokens[key] = {t: vocab[t] for t in ["<sdxl-toy>", "sdxl-style", "sdxl-style_1", "sdxl-style_2"]}
    with open(os.path.join(GOLDENS, "sdxl_textual_inversion.json"), "w", encoding="utf-8") as f:
        json.dump({
            "embeddings": [{"file": f, "token": t} for f, t in EMBEDDINGS],
            "cases": cases,
            "tokens": tokens,
            "pipeline": {"case": PIPELINE_CASE, "model": "tiny-sdxl", "steps": steps, "guidance_scale": guidance,
                         "width": size, "height": size},
            "about": "each embedding loaded with pipe.load_textual_inversion(sd['clip_g'], token, text_encoder_2, "
                     "tokenizer_2) and (base only) pipe.load_textual_inversion(sd['clip_l'], token, text_encoder, "
                     "tokenizer); plain cases: pipe.encode_prompt(prompt, negative_prompt=...); parts: CompelForSDXL "
                     "on the fragments, each Compel's multi-vector tokens spelled out with its tokenizer; pipeline: "
                     "StableDiffusionXLPipeline(prompt, negative_prompt, latents=initial_latents), Euler "
                     "(scripts/fixture_sdxl_textual_inversion.py)",
        }, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
