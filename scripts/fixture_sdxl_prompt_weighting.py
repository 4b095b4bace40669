"""Goldens for SDXL's long and weighted prompts: compel's embeddings of A1111-syntax prompts on the committed tiny
SDXL base and refiner (test/fixtures/tiny-sdxl, tiny-sdxl-refiner, made by fixture_families.py), and diffusers'
StableDiffusionXLPipeline given them.

Run: /work/main/.venv/bin/python scripts/fixture_sdxl_prompt_weighting.py   (CPU, a few seconds)

Reference: compel 2.5.1's `CompelForSDXL(pipe)` (compel/convenience_wrappers.py; the `Compel(tokenizer=[pipe.tokenizer,
pipe.tokenizer_2], text_encoder=[...], returned_embeddings_type=PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
requires_pooled=[False, True])` of compel's docs gives the same numbers where it runs, but it cannot pad a negative
prompt to a longer prompt's length, and it has no second prompt), with its two Compels built as
scripts/fixture_prompt_weighting.py builds SD1.x's:

    Compel(tokenizer, text_encoder, truncate_long_prompts=False, split_long_text_mode=SplitLongTextMode.BRUTAL,
           downweight_mode=DownweightMode.REMOVE,
           returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED)
    (and requires_pooled=True for tokenizer_2 / text_encoder_2)

That is: each encoder's texts (`prompt` and `negative_prompt` through the first; `prompt_2`/`negative_prompt_2`, or else
the first ones, through the second: CompelForSDXL's `style_prompt`) are encoded as SD1.x's are (75-token chunks,
weights, fragments below 1 faded, `BREAK` parts concatenated), all texts of one encoder padded to the same number of
chunks with its empty prompt's chunk, then the shorter encoder's padded with its own empty chunks to the other's length,
and the two concatenated along the channels. The pooled embeddings are compel's `get_pooled_embeddings([text])` of the
second encoder: the text as written (syntax included), cut at 77 tokens, unweighted (`text_embeds`). The refiner
(`text_encoder_2` alone) is the second Compel alone, as compel's docs build it for the refiner, reading `prompt`.

`clip_skip` has no compel option; `clip_skip_1` is the same Compels with hidden_states[-(clip_skip + 2)] for every text
(what `PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED` is at clip_skip 0), as SD1.x's weighted path skips every text alike.

compel has its own syntax, so each text gives the prompt in A1111's syntax and, written out by hand, the fragments
A1111's `parse_prompt_attention` makes of it (as fixture_prompt_weighting.py does); compel receives them as
`Fragment(text, weight)` objects, one FlattenedPrompt per BREAK part, the parts joined as a Conjunction.

Writes test/fixtures/goldens/sdxl_prompt_weighting.{json,safetensors}:
  json: {reference, cases: [{name, model, clip_skip, texts: {prompt, negative_prompt?, prompt_2?, negative_prompt_2?}
                            as {text, parts}}], pipeline: {...}}
  safetensors: per case `prompt_embeds_<case>` [1, chunks*77, 64 (refiner 32)], `pooled_<case>` [1, 32], and when it
               has a negative prompt `negative_prompt_embeds_<case>`, `negative_pooled_<case>`;
               the pipeline run (case `long_break`, Euler, 2 steps, 64x64, guidance 5, fixed initial latents):
               `initial_latents`, `latents_step_<i>`, `image`, `image_u8` from compel's embeddings, and `plain_latents_step_<i>`,
               `plain_image_u8` from diffusers' own encoding of the same texts (`prompt=`, `negative_prompt=`: cut at 77);
               the refiner's run (case `refiner`, StableDiffusionXLImg2ImgPipeline given latents, 4 steps from
               denoising_start 0.5): `refiner_initial_latents`, `refiner_latents_step_<i>`, `refiner_image_u8`.
"""

import json
import os

import numpy as np
import torch
from compel import Compel, DownweightMode, ReturnedEmbeddingsType
from compel.embeddings_provider import SplitLongTextMode
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from fixture_prompt_weighting import conjunction  # A1111's parsed fragments as compel's Conjunction

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
GOLDENS = os.path.join(FIXTURES, "goldens")
D = 1 / 1.1  # A1111's square-bracket multiplier
CATS = "cat " * 70  # 70 tokens: the next fragment straddles the 75-token chunk boundary
LONG = CATS + "(a very long weighted phrase here:1.2) and [tail words] (faded:0.4) BREAK golden hour, (soft light:1.1)"
LONG_PARTS = [[(CATS, 1.0), ("a very long weighted phrase here", 1.2), (" and ", 1.0), ("tail words", D), (" ", 1.0),
               ("faded", 0.4)], [("golden hour, ", 1.0), ("soft light", 1.1)]]  # BREAK takes the spaces around it


def t(text, parts):
    return {"text": text, "parts": parts}


NEG = t("ugly, [deformed]", [[("ugly, ", 1.0), ("deformed", D)]])
# name, model, clip_skip, texts
CASES = [
    ("weighted", "tiny-sdxl", None, {
        "negative_prompt": NEG,
        "prompt": t("a (red:1.3) cat, ((detailed)) fur", [[("a ", 1.0), ("red", 1.3), (" cat, ", 1.0),
                                                         ("detailed", 1.1 * 1.1), (" fur", 1.0)]]),
    }),
    ("downweighted", "tiny-sdxl", None, {
        "negative_prompt": t("", [[("", 1.0)]]),
        "prompt": t("a [blurry] photo of a (dog:0.5) on grass", [[("a ", 1.0), ("blurry", D), (" photo of a ", 1.0),
                                                                 ("dog", 0.5), (" on grass", 1.0)]]),
    }),
    ("long_break", "tiny-sdxl", None, {"negative_prompt": NEG, "prompt": t(LONG, LONG_PARTS)}),
    # Each encoder its own texts; the second's prompt is two chunks long, the first's one: the first is padded.
    ("prompt_2", "tiny-sdxl", None, {
        "negative_prompt": t("blurry", [[("blurry", 1.0)]]),
        "prompt": t("a (red:1.3) cat", [[("a ", 1.0), ("red", 1.3), (" cat", 1.0)]]),
        "prompt_2": t(CATS + "on a [mat]", [[(CATS + "on a ", 1.0), ("mat", D)]]),
        "negative_prompt_2": t("(dark:1.2), lowres", [[("dark", 1.2), (", lowres", 1.0)]]),
    }),
    # No negative prompt: force_zeros_for_empty_prompt gives zeros of the long prompt's shape.
    ("zeros", "tiny-sdxl", None, {"prompt": t(LONG, LONG_PARTS)}),
    ("clip_skip_1", "tiny-sdxl", 1, {"negative_prompt": NEG, "prompt": t(LONG, LONG_PARTS)}),
    ("refiner", "tiny-sdxl-refiner", None, {"negative_prompt": NEG, "prompt": t(LONG, LONG_PARTS)}),
]


def make_compel(tokenizer, text_encoder, pooled, clip_skip):
    compel = Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=False,
                    split_long_text_mode=SplitLongTextMode.BRUTAL, downweight_mode=DownweightMode.REMOVE,
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=pooled)
    if clip_skip:
        provider = compel.conditioning_provider

        def encode(token_ids, attention_mask=None):
            out = provider.text_encoder(token_ids, attention_mask, output_hidden_states=True, return_dict=True)
            return out.hidden_states[-(clip_skip + 2)]

        provider._encode_token_ids_to_embeddings = encode
    return compel


def encode_all(compel, texts):
    """compel(texts) of CompelForSDXL, on A1111's fragments: every text's conditioning, padded to the same length."""
    conds = [compel.build_conditioning_tensor_for_conjunction(conjunction(x["parts"]))[0] for x in texts]
    return torch.cat(compel.pad_conditioning_tensors_to_same_length(conds))


def pad_to(embeds, compel, tokens):
    """CompelForSDXL's padding of one encoder's embeddings with its own empty conditioning."""
    if embeds.shape[1] >= tokens:
        return embeds
    empty = compel.build_conditioning_tensor_for_conjunction(conjunction([[("", 1.0)]]))[0]
    return torch.cat([embeds, empty.repeat(embeds.shape[0], (tokens - embeds.shape[1]) // empty.shape[1], 1)], dim=1)


@torch.no_grad()
def sdxl_embeddings(pipe, texts, clip_skip):
    """(prompt_embeds, pooled, negative_prompt_embeds or None, negative_pooled or None) as CompelForSDXL gives them."""
    negatives = [texts["negative_prompt"]] if "negative_prompt" in texts else []
    first = negatives + [texts["prompt"]]
    second = ([texts.get("negative_prompt_2", texts["negative_prompt"])] if negatives else []) + \
        [texts.get("prompt_2", texts["prompt"])]
    compel_2 = make_compel(pipe.tokenizer_2, pipe.text_encoder_2, True, clip_skip)
    right = encode_all(compel_2, second)
    if pipe.text_encoder is not None:
        compel_1 = make_compel(pipe.tokenizer, pipe.text_encoder, False, clip_skip)
        left = encode_all(compel_1, first)
        tokens = max(left.shape[1], right.shape[1])
        embeds = torch.cat([pad_to(left, compel_1, tokens), pad_to(right, compel_2, tokens)], dim=-1)
    else:
        embeds = right
    pooled = compel_2.conditioning_provider.get_pooled_embeddings([x["text"] for x in second])
    if negatives:
        return embeds[1:], pooled[1:], embeds[:1], pooled[:1]
    return embeds, pooled, None, None


def run_pipeline(pipe, initial, steps, guidance, size, **call):
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[i] = kwargs["latents"].clone()
        return {}

    with torch.no_grad():
        image = pipe(**call, num_inference_steps=steps, guidance_scale=guidance, width=size, height=size,
                     latents=initial.clone(), output_type="pt", callback_on_step_end=on_step_end).images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).contiguous()
    return captured, image, image_u8


def run_refiner(pipe, latents, steps, start, guidance, **call):
    """The refiner continuing `latents` from `start` (img2img given latents: no VAE encode, no noise)."""
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[len(captured)] = kwargs["latents"].clone()
        return {}

    with torch.no_grad():
        image = pipe(image=latents.clone(), **call, num_inference_steps=steps, denoising_start=start,
                     guidance_scale=guidance, output_type="pt", callback_on_step_end=on_step_end).images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).contiguous()
    return captured, image, image_u8


def main():
    pipes = {
        "tiny-sdxl": StableDiffusionXLPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl")),
        "tiny-sdxl-refiner": StableDiffusionXLImg2ImgPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl-refiner")),
    }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    tensors, cases, of = {}, [], {}
    for name, model, clip_skip, texts in CASES:
        embeds, pooled, negative, negative_pooled = sdxl_embeddings(pipes[model], texts, clip_skip)
        of[name] = (embeds, pooled, negative, negative_pooled)
        tensors[f"prompt_embeds_{name}"] = embeds.contiguous()
        tensors[f"pooled_{name}"] = pooled.contiguous()
        if negative is not None:
            tensors[f"negative_prompt_embeds_{name}"] = negative.contiguous()
            tensors[f"negative_pooled_{name}"] = negative_pooled.contiguous()
        cases.append({"name": name, "model": model, "clip_skip": clip_skip, "texts": texts})
        print(f"{name}: prompt_embeds {tuple(embeds.shape)}, pooled {tuple(pooled.shape)}")
    # The weighting matters: the plain encoding of the same text differs.
    plain = pipes["tiny-sdxl"].encode_prompt(CASES[0][3]["prompt"]["text"], device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=False)[0]
    assert not torch.allclose(plain, of["weighted"][0], atol=1e-4), "the weights changed nothing"

    # The whole base pipeline on the long_break case's embeddings, and on diffusers' own (plain, cut) encoding.
    name, steps, guidance, size = "long_break", 2, 5.0, 64
    pipe = pipes["tiny-sdxl"]
    case = next(c for c in CASES if c[0] == name)[3]
    g = torch.Generator().manual_seed(41)
    initial = torch.randn(1, pipe.unet.config.in_channels, size // pipe.vae_scale_factor,
                          size // pipe.vae_scale_factor, generator=g)
    embeds, pooled, negative, negative_pooled = of[name]
    latents, image, image_u8 = run_pipeline(pipe, initial, steps, guidance, size, prompt_embeds=embeds,
                                             pooled_prompt_embeds=pooled, negative_prompt_embeds=negative,
                                             negative_pooled_prompt_embeds=negative_pooled)
    plain_latents, _, plain_u8 = run_pipeline(pipe, initial, steps, guidance, size, prompt=case["prompt"]["text"],
                                              negative_prompt=case["negative_prompt"]["text"])
    tensors.update({"initial_latents": initial, "image": image.contiguous(), "image_u8": image_u8,
                    "plain_image_u8": plain_u8})
    tensors.update({f"latents_step_{i}": v for i, v in latents.items()})
    tensors.update({f"plain_latents_step_{i}": v for i, v in plain_latents.items()})
    assert not torch.allclose(latents[steps - 1], plain_latents[steps - 1], atol=1e-3)

    # The refiner's whole pipeline (StableDiffusionXLImg2ImgPipeline: text_encoder_2 alone, aesthetic scores) on the
    # refiner case's embeddings, continuing given latents from denoising_start (the base-to-refiner handoff's form:
    # no noise is drawn, so the run is the same wherever it runs).
    refiner, r_steps, r_start = pipes["tiny-sdxl-refiner"], 4, 0.5
    g = torch.Generator().manual_seed(43)
    handoff = torch.randn(1, refiner.unet.config.in_channels, size // refiner.vae_scale_factor,
                          size // refiner.vae_scale_factor, generator=g)
    r_embeds, r_pooled, r_negative, r_negative_pooled = of["refiner"]
    r_latents, _, r_u8 = run_refiner(refiner, handoff, r_steps, r_start, guidance, prompt_embeds=r_embeds,
                                     pooled_prompt_embeds=r_pooled, negative_prompt_embeds=r_negative,
                                     negative_pooled_prompt_embeds=r_negative_pooled)
    tensors.update({"refiner_initial_latents": handoff, "refiner_image_u8": r_u8})
    tensors.update({f"refiner_latents_step_{i}": v for i, v in r_latents.items()})
    save_file(tensors, os.path.join(GOLDENS, "sdxl_prompt_weighting.safetensors"))
    with open(os.path.join(GOLDENS, "sdxl_prompt_weighting.json"), "w", encoding="utf-8") as f:
        json.dump({
            "reference": "compel 2.5.1 CompelForSDXL's two Compels, each Compel(tokenizer, text_encoder, "
                         "truncate_long_prompts=False, split_long_text_mode=BRUTAL, downweight_mode=REMOVE, "
                         "returned_embeddings_type=PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED), the second "
                         "requires_pooled=True (scripts/fixture_sdxl_prompt_weighting.py)",
            "cases": cases,
            "pipeline": {"case": name, "model": "tiny-sdxl", "steps": steps, "guidance_scale": guidance,
                         "width": size, "height": size,
                         "about": "StableDiffusionXLPipeline(prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, "
                                  "negative_pooled_prompt_embeds from compel; latents=initial_latents, output_type='pt'); "
                                  "plain_*: the same call with prompt= and negative_prompt= (diffusers' encoding); "
                                  "latents_step_i after step i; image_u8 = round(image*255) HWC"},
            "refiner_pipeline": {"case": "refiner", "model": "tiny-sdxl-refiner", "steps": r_steps, "width": size, "height": size,
                                 "denoising_start": r_start, "guidance_scale": guidance, "unet_calls": len(r_latents),
                                 "about": "StableDiffusionXLImg2ImgPipeline(image=refiner_initial_latents (latents: not "
                                          "encoded), the refiner case's compel embeddings, denoising_start, "
                                          "output_type='pt'): no noise drawn; refiner_latents_step_i after UNet "
                                          "call i; refiner_image_u8 = round(image*255) HWC"},
        }, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
