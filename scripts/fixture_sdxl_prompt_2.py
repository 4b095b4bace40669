"""SDXL's second prompts (`prompt_2`, `negative_prompt_2`) in diffusers 0.42.1, on the committed tiny SDXL base and
refiner (test/fixtures/tiny-sdxl, tiny-sdxl-refiner, made by fixture_families.py).

Run: /work/main/.venv/bin/python scripts/fixture_sdxl_prompt_2.py   (CPU, a few seconds)

`StableDiffusionXLPipeline.encode_prompt`: `prompt` goes through tokenizer/text_encoder, `prompt_2 or prompt` through
tokenizer_2/text_encoder_2; the negatives likewise (`negative_prompt_2 or negative_prompt`), except that with
`force_zeros_for_empty_prompt` and `negative_prompt is None` the negative embeddings are zeros whatever
`negative_prompt_2` is. The refiner (no first tokenizer) zips `[prompt, prompt_2]` with `[tokenizer_2]`: it reads
`prompt` and `negative_prompt` and ignores the second prompts. Writes test/fixtures/goldens/family_<name>.{json,safetensors}
in fixture_families.py's layout (read by crates/candlewick-core/tests/families.rs):

  sdxl_prompt_2         both second prompts differ from the first ones; Euler, 2 steps
  sdxl_prompt_2_zeros   prompt_2 and negative_prompt_2 without negative_prompt: zero negative embeddings; clip_skip 1
  sdxl_refiner_prompt_2 the refiner's image to image with both second prompts set: the same run as without them
"""

import json
import os

import torch
from PIL import Image
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from fixture_families import NEGATIVE, PROMPT, run, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
GOLDENS = os.path.join(FIXTURES, "goldens")
PROMPT_2 = "a cat sitting on a red chair"
NEGATIVE_2 = "dark, lowres"


@torch.no_grad()
def embeds(pipe, **call):
    """encode_prompt's four outputs for one call's texts."""
    return pipe.encode_prompt(device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, **call)


def main():
    base = StableDiffusionXLPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl"))
    extra = ("prompt_embeds", "add_text_embeds")
    # The second prompts change both halves of the embeddings' second encoder and the pooled text: not a no-op.
    first = embeds(base, prompt=PROMPT, negative_prompt=NEGATIVE)
    second = embeds(base, prompt=PROMPT, prompt_2=PROMPT_2, negative_prompt=NEGATIVE, negative_prompt_2=NEGATIVE_2)
    for a, b in zip(first, second):
        assert not torch.equal(a, b), "prompt_2 / negative_prompt_2 changed nothing"
    # ...and the first encoder's half (the first 32 channels) not at all.
    assert torch.equal(first[0][..., :32], second[0][..., :32])
    run(base, GOLDENS, "sdxl_prompt_2", {"model": "tiny-sdxl", "scheduler": None}, extra_inputs=extra,
        prompt=PROMPT, prompt_2=PROMPT_2, negative_prompt=NEGATIVE, negative_prompt_2=NEGATIVE_2,
        num_inference_steps=2, guidance_scale=5.0)

    # force_zeros_for_empty_prompt looks at negative_prompt alone: negative_prompt_2 is ignored without it.
    zeros = embeds(base, prompt=PROMPT, prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2, clip_skip=1)
    assert base.config.force_zeros_for_empty_prompt and not zeros[1].any() and not zeros[3].any()
    run(base, GOLDENS, "sdxl_prompt_2_zeros", {"model": "tiny-sdxl", "scheduler": None}, extra_inputs=extra,
        prompt=PROMPT, prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2, num_inference_steps=2, guidance_scale=5.0,
        clip_skip=1)

    # The refiner: prompt_2 and negative_prompt_2 are ignored (one tokenizer zipped with two prompts).
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl-refiner"))
    refiner.register_to_config(requires_aesthetics_score=True)
    image = Image.open(os.path.join(FIXTURES, "images", "input.png")).convert("RGB")
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, strength=0.6, num_inference_steps=3,
                guidance_scale=5.0)
    with torch.no_grad():
        plain = refiner(**call, generator=torch.Generator().manual_seed(0), output_type="pt").images
        with_2 = refiner(**call, prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2,
                         generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(plain, with_2), "the refiner read prompt_2"
    run(refiner, GOLDENS, "sdxl_refiner_prompt_2", {"model": "tiny-sdxl-refiner", "scheduler": None,
                                                     "image": "images/input.png"},
        **call, prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2)
    for name in ("sdxl_prompt_2", "sdxl_prompt_2_zeros", "sdxl_refiner_prompt_2"):
        path = os.path.join(GOLDENS, f"family_{name}.json")
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        meta["about"] = meta["about"].replace("scripts/fixture_families.py", "scripts/fixture_sdxl_prompt_2.py")
        write_json(path, meta)


if __name__ == "__main__":
    main()
