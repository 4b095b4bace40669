"""Goldens for long and weighted prompts: compel's embeddings of A1111-syntax prompts, on tiny-sd.

Run from the repository root (after scripts/make_fixtures.py has written test/fixtures/tiny-sd):

    .venv/bin/python scripts/fixture_prompt_weighting.py

Reference: compel 2.5.1 (PyPI; pinned in scripts/requirements-fixtures.txt), built as

    Compel(tokenizer, text_encoder, truncate_long_prompts=False,
           split_long_text_mode=SplitLongTextMode.BRUTAL, downweight_mode=DownweightMode.REMOVE)

i.e. 75-token chunks framed by <|startoftext|>/<|endoftext|> and padded to 77, encoded separately and
concatenated; weights applied as `empty + (z - empty) * w`; fragments weighted below 1 removed and
lerped with tan((1 - w) * pi / 2); texts padded to the same length with empty-prompt chunks.

compel has its own syntax (`(word)1.3`), so each case gives the prompt in A1111's syntax and, written
out by hand, the fragments A1111's `parse_prompt_attention` makes of it (its documented rules: `(x)`
x1.1, `[x]` x1/1.1, `(x:w)` xw, nesting multiplies, `\\(` escapes, unclosed brackets run to the end,
`BREAK` splits the prompt into parts). compel receives those fragments as `Fragment(text, weight)`
objects, one `FlattenedPrompt` per part, the parts joined as a `Conjunction` (`.and()`: concatenated).

Writes test/fixtures/goldens/prompt_weighting.{json,safetensors}:
  json: {reference, cases: [{name, texts: [{text, parts: [[[fragment, weight], ...], ...]}]}]}
  safetensors: `embeds_<case>` f32 [texts, chunks*77, 32] (texts padded to the same length, in order),
               `ids_<case>_<text>` i64 [chunks*77] (compel's token ids, parts concatenated)
and goldens/prompt_weighting_pipeline.{json,safetensors}: StableDiffusionPipeline on tiny-sd given
compel's prompt_embeds / negative_prompt_embeds for the `long_weighted` case (5 DDIM steps, 32x32,
guidance 7.5, eta 0, fixed initial latents): `initial_latents`, `latents_step_<i>`, `image`, `image_u8`.
"""

import json
import os

import numpy as np
import torch
from compel import Compel, DownweightMode
from compel.embeddings_provider import SplitLongTextMode
from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "test", "fixtures", "tiny-sd")
GOLDENS = os.path.join(ROOT, "test", "fixtures", "goldens")

D = 1 / 1.1  # A1111's square-bracket multiplier
CATS = "cat " * 70  # 70 tokens: the next fragment straddles the 75-token chunk boundary
LONG = (
    "a highly detailed matte painting of a sprawling cyberpunk city at night, neon signs reflecting on wet "
    "streets, flying cars, towering skyscrapers, dense fog, volumetric lighting, cinematic composition, "
    "trending on artstation, octane render, 8k, ultra realistic, sharp focus, intricate details, dramatic "
    "shadows, vibrant colors, wide angle lens, award winning photograph, golden hour, reflections in puddles, "
    "crowds of people with umbrellas, holographic billboards, steam rising from vents"
)

# Each case: the texts of one call (negative prompts first, as the pipeline orders them), each as
# (prompt in A1111 syntax, the parts A1111 parses it into).
CASES = [
    ("plain", [
        ("blurry", [[("blurry", 1.0)]]),
        ("a photo of an astronaut riding a horse on mars", [[("a photo of an astronaut riding a horse on mars", 1.0)]]),
    ]),
    ("upweighted", [
        ("", [[("", 1.0)]]),
        ("a (red:1.3) cat, ((detailed)) fur", [[("a ", 1.0), ("red", 1.3), (" cat, ", 1.0), ("detailed", 1.1 * 1.1),
                                                  (" fur", 1.0)]]),
    ]),
    ("downweighted", [
        ("", [[("", 1.0)]]),
        ("a [blurry] photo of a (dog:0.5) on grass", [[("a ", 1.0), ("blurry", D), (" photo of a ", 1.0),
                                                       ("dog", 0.5), (" on grass", 1.0)]]),
    ]),
    ("a1111_docstring", [
        ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", [[
            ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
            (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]]),
    ]),
    ("escapes", [
        ("\\(literal\\) parens, \\[brackets\\] and (unclosed", [[
            ("(literal) parens, [brackets] and ", 1.0), ("unclosed", 1.1)]]),
    ]),
    ("long_plain", [
        ("blurry", [[("blurry", 1.0)]]),
        (LONG, [[(LONG, 1.0)]]),
    ]),
    ("long_weighted", [
        ("ugly, [deformed]", [[("ugly, ", 1.0), ("deformed", D)]]),
        (CATS + "(a very long weighted phrase here:1.2) and [tail words] (faded:0.4)", [[
            (CATS, 1.0), ("a very long weighted phrase here", 1.2), (" and ", 1.0), ("tail words", D), (" ", 1.0),
            ("faded", 0.4)]]),
    ]),
    ("break", [
        ("ugly BREAK blurry BREAK dark", [[("ugly", 1.0)], [("blurry", 1.0)], [("dark", 1.0)]]),
        ("a cat BREAK (a dog:1.2) on a [mat]", [[("a cat", 1.0)], [("a dog", 1.2), (" on a ", 1.0), ("mat", D)]]),
    ]),
]


def conjunction(parts):
    prompts = []
    for part in parts:
        fragments = []
        for text, weight in part:
            f = Fragment("", weight)
            f.text = text  # as is: Fragment() would unescape "\\(" again
            fragments.append(f)
        prompts.append(FlattenedPrompt(fragments))
    return Conjunction(prompts)


def main():
    pipe = StableDiffusionPipeline.from_pretrained(TINY, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    compel = Compel(pipe.tokenizer, pipe.text_encoder, truncate_long_prompts=False,
                    split_long_text_mode=SplitLongTextMode.BRUTAL, downweight_mode=DownweightMode.REMOVE)
    tensors, cases, embeds_of = {}, [], {}
    with torch.no_grad():
        for name, texts in CASES:
            conds = []
            for t, (_, parts) in enumerate(texts):
                cond, ids, _ = compel.build_conditioning_tensor_for_conjunction(conjunction(parts), return_tokenization=True)
                conds.append(cond)
                tensors[f"ids_{name}_{t}"] = ids.to(torch.int64).flatten().contiguous()
            conds = compel.pad_conditioning_tensors_to_same_length(conds)
            embeds = torch.cat(conds).contiguous()
            embeds_of[name] = conds
            tensors[f"embeds_{name}"] = embeds
            cases.append({"name": name, "texts": [{"text": text, "parts": parts} for text, parts in texts]})
            print(f"{name}: embeds {tuple(embeds.shape)}")
    save_file(tensors, os.path.join(GOLDENS, "prompt_weighting.safetensors"))
    with open(os.path.join(GOLDENS, "prompt_weighting.json"), "w", encoding="utf-8") as f:
        json.dump({"reference": "compel 2.5.1: Compel(tokenizer, text_encoder, truncate_long_prompts=False, "
                                "split_long_text_mode=SplitLongTextMode.BRUTAL, downweight_mode=DownweightMode.REMOVE)",
                   "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    make_pipeline(pipe, "long_weighted", embeds_of["long_weighted"])


def make_pipeline(pipe, name, conds, steps=5, guidance=7.5, size=32):
    negative, positive = conds
    g = torch.Generator().manual_seed(40)
    scale = pipe.vae_scale_factor
    latents = torch.randn(1, pipe.unet.config.in_channels, size // scale, size // scale, generator=g)
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[f"latents_step_{i}"] = kwargs["latents"].clone()
        return {}

    image = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, num_inference_steps=steps,
                 guidance_scale=guidance, width=size, height=size, eta=0.0, latents=latents.clone(), output_type="pt",
                 callback_on_step_end=on_step_end).images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).contiguous()
    save_file({"initial_latents": latents, **captured, "image": image.contiguous(), "image_u8": image_u8},
              os.path.join(GOLDENS, "prompt_weighting_pipeline.safetensors"))
    case = next(texts for n, texts in CASES if n == name)
    with open(os.path.join(GOLDENS, "prompt_weighting_pipeline.json"), "w", encoding="utf-8") as f:
        json.dump({"case": name, "negative_prompt": case[0][0], "prompt": case[1][0], "steps": steps,
                   "guidance_scale": guidance, "width": size, "height": size,
                   "about": "StableDiffusionPipeline(prompt_embeds=compel(prompt), negative_prompt_embeds="
                            "compel(negative_prompt), latents=initial_latents, eta=0, output_type='pt'); "
                            "latents_step_i after step i; image_u8 = round(image*255) HWC"}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
