"""Goldens for the tasks that take an image: diffusers' StableDiffusionImg2ImgPipeline and
StableDiffusionInpaintPipeline on test/fixtures/tiny-sd (and a 9-channel inpainting UNet), CPU, float32.

Run from the repository root (make_fixtures.py --images-only calls `make`):

    .venv/bin/python scripts/make_fixtures.py --images-only

Writes (test/fixtures/README.md describes them):
  test/fixtures/images/input.png, mask.png       a 32x32 RGB picture and a 32x32 grayscale mask (white = repaint)
  test/fixtures/images/input.webp                input.png as lossless WebP
  test/fixtures/images/orientation6.jpg          16x8 stored, EXIF orientation 6: shown 8x16, red above blue
  test/fixtures/goldens/image_inputs.safetensors VaeImageProcessor / mask processor outputs for those files
  test/fixtures/tiny-sd-inpaint/                 model_index.json (StableDiffusionInpaintPipeline) and a tiny
                                                 9-channel unet/ (f32); its other components are tiny-sd's
  test/fixtures/goldens/img2img_<case>.*         per-step latents and the image of a 5-step img2img run
  test/fixtures/goldens/inpaint_<case>.*         the same for inpainting (4- and 9-channel UNets)

Every standard-normal draw the pipeline makes (the VAE's latent_dist.sample, the initial noise, a scheduler's
step noise) is recorded in order as `noise_<k>`: the Rust tests replay them through the pipeline's noise source.
"""

import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import diffusers
from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)

import fixture_models

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
SIZE = 32

# (name, scheduler class or None for the folder's DDIM, overrides, strength)
IMG2IMG_CASES = [
    ("ddim", None, {}, 0.6),
    ("euler", "EulerDiscreteScheduler", {}, 0.8),
    ("dpm_2m_karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, 0.7),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}, 0.6),
    # Two UNet calls a step (the begin index counts calls), PLMS's repeated first timestep, UniPC's corrector.
    ("heun", "HeunDiscreteScheduler", {}, 0.6),
    ("plms", "PNDMScheduler", {"skip_prk_steps": True}, 0.6),
    ("unipc", "UniPCMultistepScheduler", {}, 0.7),
]
# (name, unet channels, scheduler, overrides, strength)
INPAINT_CASES = [
    ("ddim_4ch", 4, None, {}, 1.0),
    ("euler_4ch", 4, "EulerDiscreteScheduler", {}, 0.75),
    ("ddim_9ch", 9, None, {}, 1.0),
    ("dpm_2m_karras_9ch", 9, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, 0.8),
]

# A smaller UNet than tiny-sd's, with the sd-v1-5-inpainting layout: 4 latent + 1 mask + 4 masked-image channels.
TINY_INPAINT_UNET = dict(fixture_models.TINY_UNET, in_channels=9, block_out_channels=(32, 32), layers_per_block=1,
                         attention_head_dim=(2, 2))


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def make_inputs(images_dir):
    """A 32x32 picture (gradients, a disc, a bar: every channel varies) and a mask with a white block."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = 255 * x / (SIZE - 1)
    g = 255 * y / (SIZE - 1)
    b = np.where((x - 20) ** 2 + (y - 12) ** 2 < 49, 230.0, 40.0)
    g = np.where((y > 22) & (y < 27), 200.0, g)
    rgb = np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 4:20] = 255
    os.makedirs(images_dir, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(os.path.join(images_dir, "input.png"))
    Image.fromarray(mask, "L").save(os.path.join(images_dir, "mask.png"))
    # The same picture as lossless WebP: it must decode to the same pixels.
    Image.fromarray(rgb, "RGB").save(os.path.join(images_dir, "input.webp"), lossless=True)
    # EXIF orientation 6 (the camera was turned: show it rotated 90 degrees clockwise): stored 16x8, left half
    # red, right half blue; shown 8x16, red on top.
    turned = np.zeros((8, 16, 3), np.uint8)
    turned[:, :8] = (230, 20, 20)
    turned[:, 8:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(turned, "RGB").save(os.path.join(images_dir, "orientation6.jpg"), quality=95, exif=exif)
    return Image.open(os.path.join(images_dir, "input.png")), Image.open(os.path.join(images_dir, "mask.png"))


def make_inpaint_unet(tiny, folder, seed=40):
    """tiny-sd-inpaint/: model_index.json and a 9-channel unet/ (perturbed like tiny-sd's)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_INPAINT_UNET)
    fixture_models.perturb(unet, torch.Generator().manual_seed(seed + 1))
    unet.eval()
    shutil.rmtree(folder, ignore_errors=True)
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    with open(os.path.join(tiny, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    write_json(os.path.join(folder, "model_index.json"), index)
    return unet


class NoiseRecorder:
    """Records every torch.randn draw (diffusers' randn_tensor calls torch.randn) in order."""

    def __init__(self):
        self.draws = []
        self.original = torch.randn

    def __enter__(self):
        def randn(*args, **kwargs):
            out = self.original(*args, **kwargs)
            self.draws.append(out.clone())
            return out

        torch.randn = randn
        return self

    def __exit__(self, *exc):
        torch.randn = self.original


def with_scheduler(pipe, cls, overrides):
    if cls is None:
        return pipe
    return type(pipe)(**{**pipe.components, "scheduler": getattr(diffusers, cls).from_config(
        pipe.scheduler.config, **overrides)})


@torch.no_grad()
def run(pipe, name, out_dir, about, **kwargs):
    captured = {}

    def on_step_end(p, i, t, kw):
        captured[f"latents_step_{i}"] = kw["latents"].clone()
        return {}

    with NoiseRecorder() as rec:
        result = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=7.5,
                      generator=torch.Generator().manual_seed(0), output_type="pt", callback_on_step_end=on_step_end,
                      callback_on_step_end_tensor_inputs=["latents"], **kwargs)
    image = result.images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    tensors = {**captured, "image": image, "image_u8": image_u8}
    tensors.update({f"noise_{k}": v for k, v in enumerate(rec.draws)})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(out_dir, f"{name}.safetensors"))
    return captured, rec.draws


def make(tiny, fixtures):
    goldens = os.path.join(fixtures, "goldens")
    image, mask = make_inputs(os.path.join(fixtures, "images"))
    base = StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False)
    components = {k: v for k, v in base.components.items() if k not in ("safety_checker", "feature_extractor",
                                                                           "image_encoder")}
    img2img = StableDiffusionImg2ImgPipeline(**components, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    # The preprocessed image (VaeImageProcessor: 32x32 is already a multiple of the scale factor: no resize).
    init_image = img2img.image_processor.preprocess(image)
    mask_condition = StableDiffusionInpaintPipeline(**components, safety_checker=None, feature_extractor=None,
                                                    requires_safety_checker=False).mask_processor.preprocess(mask)
    # A resize (PIL's Lanczos, the processor's default resample) to another size and aspect.
    resized = img2img.image_processor.preprocess(image, height=40, width=24)
    save_file({"init_image": init_image.contiguous(), "mask_condition": mask_condition.contiguous(),
               "init_image_24x40": resized.contiguous()},
              os.path.join(goldens, "image_inputs.safetensors"))
    for name, cls, overrides, strength in IMG2IMG_CASES:
        pipe = with_scheduler(img2img, cls, overrides)
        captured, draws = run(pipe, f"img2img_{name}", goldens, "", image=image, strength=strength, eta=0.0)
        write_json(os.path.join(goldens, f"img2img_{name}.json"), {
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 5, "guidance_scale": 7.5, "strength": strength,
            "image": "images/input.png", "scheduler": None if cls is None else {"type": cls, **overrides},
            "timesteps": pipe.scheduler.timesteps.tolist(), "unet_calls": len(captured), "noise_draws": len(draws),
            "about": "StableDiffusionImg2ImgPipeline(image=images/input.png, strength, generator=manual_seed(0), "
                     "output_type='pt'); noise_k = the k-th torch.randn draw (VAE latent_dist.sample first, then "
                     "the add_noise noise, then step noise); latents_step_i after UNet call i",
        })
        print(f"img2img_{name}: {len(captured)} UNet calls, {len(draws)} noise draws")

    inpaint_unet = make_inpaint_unet(tiny, os.path.join(fixtures, "tiny-sd-inpaint"))
    for name, channels, cls, overrides, strength in INPAINT_CASES:
        parts = dict(components, unet=inpaint_unet) if channels == 9 else components
        pipe = with_scheduler(StableDiffusionInpaintPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                             requires_safety_checker=False), cls, overrides)
        captured, draws = run(pipe, f"inpaint_{name}", goldens, "", image=image, mask_image=mask, strength=strength,
                              height=SIZE, width=SIZE, eta=0.0)
        write_json(os.path.join(goldens, f"inpaint_{name}.json"), {
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 5, "guidance_scale": 7.5, "strength": strength,
            "image": "images/input.png", "mask_image": "images/mask.png", "width": SIZE, "height": SIZE,
            "model": "tiny-sd" if channels == 4 else "tiny-sd-inpaint", "unet_in_channels": channels,
            "scheduler": None if cls is None else {"type": cls, **overrides},
            "timesteps": pipe.scheduler.timesteps.tolist(), "unet_calls": len(captured), "noise_draws": len(draws),
            "about": "StableDiffusionInpaintPipeline(image, mask_image, strength, height, width, generator="
                     "manual_seed(0), output_type='pt'); noise_k = the k-th torch.randn draw (VAE samples and noise in "
                     "diffusers' order); latents_step_i after UNet call i (after the known region's blend, 4 channels)",
        })
        print(f"inpaint_{name}: {len(captured)} UNet calls, {len(draws)} noise draws")
