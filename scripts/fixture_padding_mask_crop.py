"""Inpainting with `padding_mask_crop` (A1111's "inpaint only masked"): diffusers' StableDiffusionInpaintPipeline
on test/fixtures/tiny-sd (4-channel UNet) and tiny-sd-inpaint (9-channel), CPU, float32.

Run from the repository root after fixture_images.py (which writes images/input.png, images/mask.png and
tiny-sd-inpaint/) and fixture_families.py (tiny-sdxl); make_fixtures.py runs it after both:

    .venv/bin/python scripts/fixture_padding_mask_crop.py

Writes (test/fixtures/README.md describes them):
  test/fixtures/images/mask_corner.png         a 32x32 mask: a white block near the top right corner and one gray
                                               (100) pixel, which widens the crop box (get_crop_region counts every
                                               nonzero pixel) but is kept (it binarizes to 0)
  test/fixtures/goldens/mask_crop_<case>.json  the call, the crop box (`crops_coords`), the UNet calls and draws
  test/fixtures/goldens/mask_crop_<case>.safetensors
      init_image, mask_condition   image_processor / mask_processor.preprocess(..., crops_coords, resize_mode="fill")
      noise_k                      the k-th torch.randn draw, in diffusers' order
      latents_step_i               the latents after UNet call i
      generated_u8                 the decoded image before the overlay (postprocess to PIL), HWC uint8
      image_u8                     the pipeline's output: apply_overlay(mask, image, generated, crops_coords), HWC
                                   uint8 at the original image's size

Cases: the crop box grown sideways to a wide output and clamped at the left edge (the fill's left strip); grown
to a narrow output past the image's height (clamped: the fill's top and bottom strips); grown downwards to a tall
output from a box at the top edge, with a gray pixel that widens the box; and StableDiffusionXLInpaintPipeline on
tiny-sdxl (4-channel UNet, its default strength 0.9999: `strength` null in the json).
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusers  # noqa: E402
from diffusers import (StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline,  # noqa: E402
                       StableDiffusionXLPipeline, UNet2DConditionModel)

from fixture_images import NEGATIVE, PROMPT, NoiseRecorder, write_json  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
GOLDENS = os.path.join(FIXTURES, "goldens")

# (name, model, scheduler class or None for the folder's DDIM, mask file, padding_mask_crop, width, height, strength)
CASES = [
    ("ddim_4ch_wide", "tiny-sd", None, "images/mask.png", 2, 32, 24, 1.0),
    ("ddim_4ch_narrow", "tiny-sd", None, "images/mask.png", 2, 16, 32, 0.6),
    ("euler_9ch_tall", "tiny-sd-inpaint", "EulerDiscreteScheduler", "images/mask_corner.png", 3, 24, 32, 0.75),
    # StableDiffusionXLInpaintPipeline on tiny-sdxl (its folder's Euler, the default strength 0.9999).
    ("sdxl_4ch_wide", "tiny-sdxl", None, "images/mask_corner.png", 4, 32, 24, None),
]


def make_mask_corner(path):
    mask = np.zeros((32, 32), np.uint8)
    mask[1:6, 22:29] = 255
    mask[9, 20] = 100
    Image.fromarray(mask, "L").save(path)


def pipeline(model, cls):
    if model == "tiny-sdxl":
        base = StableDiffusionXLPipeline.from_pretrained(os.path.join(FIXTURES, model))
        return StableDiffusionXLInpaintPipeline(**base.components)
    tiny = os.path.join(FIXTURES, "tiny-sd")
    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False)
    if model == "tiny-sd-inpaint":
        unet = UNet2DConditionModel.from_pretrained(os.path.join(FIXTURES, model, "unet"))
        pipe = StableDiffusionInpaintPipeline(**{**pipe.components, "unet": unet})
    if cls is not None:
        pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config)
    return pipe


def u8(pil):
    return torch.from_numpy(np.array(pil.convert("RGB"), dtype=np.uint8))


@torch.no_grad()
def make_case(name, model, cls, mask_file, pad, width, height, strength):
    pipe = pipeline(model, cls)
    image = Image.open(os.path.join(FIXTURES, "images/input.png"))
    mask = Image.open(os.path.join(FIXTURES, mask_file))
    crops_coords = pipe.mask_processor.get_crop_region(mask, width, height, pad=pad)
    init_image = pipe.image_processor.preprocess(image, height=height, width=width, crops_coords=crops_coords,
                                                 resize_mode="fill")
    mask_condition = pipe.mask_processor.preprocess(mask, height=height, width=width, crops_coords=crops_coords,
                                                    resize_mode="fill")
    captured, generated = {}, []

    def on_step_end(p, i, t, kw):
        captured[f"latents_step_{i}"] = kw["latents"].clone()
        return {}

    overlay = pipe.image_processor.apply_overlay

    def recording_overlay(mask_image, init, out, coords):
        generated.append(out.copy())
        return overlay(mask_image, init, out, coords)

    pipe.image_processor.apply_overlay = recording_overlay
    call = {} if strength is None else {"strength": strength}
    with NoiseRecorder() as rec:
        result = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, mask_image=mask, padding_mask_crop=pad,
                      width=width, height=height, **call, num_inference_steps=5, guidance_scale=7.5,
                      generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end,
                      callback_on_step_end_tensor_inputs=["latents"])
    final = result.images[0]
    assert final.size == image.size and generated[0].size == (width, height)
    tensors = {**captured, "init_image": init_image, "mask_condition": mask_condition,
               "generated_u8": u8(generated[0]), "image_u8": u8(final)}
    tensors.update({f"noise_{k}": v for k, v in enumerate(rec.draws)})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(GOLDENS, f"mask_crop_{name}.safetensors"))
    write_json(os.path.join(GOLDENS, f"mask_crop_{name}.json"), {
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 5, "guidance_scale": 7.5, "strength": strength,
        "image": "images/input.png", "mask_image": mask_file, "padding_mask_crop": pad, "width": width,
        "height": height, "model": model, "scheduler": None if cls is None else {"type": cls},
        "crops_coords": list(crops_coords), "unet_calls": len(captured), "noise_draws": len(rec.draws),
        "about": "StableDiffusionInpaintPipeline(image, mask_image, padding_mask_crop, width, height, strength, "
                 "generator=manual_seed(0), output_type='pil'); crops_coords = mask_processor.get_crop_region(mask, "
                 "width, height, pad); generated_u8 = the image handed to apply_overlay; image_u8 = the output",
    })
    print(f"mask_crop_{name}: crops_coords {crops_coords}, {len(captured)} UNet calls, {len(rec.draws)} draws")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    make_mask_corner(os.path.join(FIXTURES, "images", "mask_corner.png"))
    for case in CASES:
        make_case(*case)


if __name__ == "__main__":
    main()
