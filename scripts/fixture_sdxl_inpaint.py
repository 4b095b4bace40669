"""SDXL inpainting (diffusers' StableDiffusionXLInpaintPipeline) on the committed tiny SDXL models.

Run: /work/main/.venv/bin/python scripts/fixture_sdxl_inpaint.py   (diffusers 0.42.1; CPU, float32; after
fixture_families.py, which writes tiny-sdxl and tiny-sdxl-refiner, and fixture_images.py, which writes
images/input.png and images/mask.png; make_fixtures.py runs it after both)

Writes (test/fixtures/README.md describes them):
  test/fixtures/tiny-sdxl-inpaint/   model_index.json (StableDiffusionXLInpaintPipeline) and unet/: tiny-sdxl's UNet
                                     config with 9 input channels (4 latent + 1 mask + 4 masked-image latents, the
                                     layout of diffusers/stable-diffusion-xl-1.0-inpainting-0.1), perturbed as the
                                     families' are; its other components are tiny-sdxl's (tests copy them beside it)
  test/fixtures/goldens/sdxl_inpaint_<case>.{json,safetensors}
  test/fixtures/single-file/tiny-sdxl-inpaint.safetensors   the composed folder's tensors in the original SDXL layout
                                     (an xl_inpaint checkpoint: tiny-sdxl.safetensors' layout with the 9-channel
                                     UNet), checked as fixture_single_file_sdxl.py checks its files

Each golden: StableDiffusionXLInpaintPipeline(image=images/input.png, mask_image=images/mask.png, **call,
generator=manual_seed(0), output_type='pt'); `noise_k` is the k-th torch.randn draw (VAE samples and noise in
diffusers' order), `latents_step_i` the latents after UNet call i (after the known region's blend with a
4-channel UNet), `image` the output in [0, 1], `image_u8` = round(image * 255) HWC.
"""

import copy
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers import (DDIMScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline,  # noqa: E402
                       StableDiffusionXLPipeline, UNet2DConditionModel)

from fixture_families import SEED, UNET_SDXL, seeded, write_json  # noqa: E402
from fixture_images import NoiseRecorder  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
GOLDENS = os.path.join(FIXTURES, "goldens")
PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on mars", "blurry"
UNET_SDXL_INPAINT = {**UNET_SDXL, "in_channels": 9}
COMPONENTS = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae")


def make_inpaint_folder(base):
    """tiny-sdxl-inpaint/: the pipeline's model_index.json and a 9-channel unet/; the reloaded pipeline."""
    unet = seeded(SEED + 40, lambda: UNet2DConditionModel(**UNET_SDXL_INPAINT))
    pipe = StableDiffusionXLInpaintPipeline(**{**base.components, "unet": unet})
    folder = os.path.join(FIXTURES, "tiny-sdxl-inpaint")
    shutil.rmtree(os.path.join(folder, "unet"), ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(tmp, "model_index.json"), folder)
        shutil.copytree(os.path.join(tmp, "unet"), os.path.join(folder, "unet"))
        # The folder as the tests compose it: tiny-sdxl's other components beside it.
        for name in COMPONENTS:
            shutil.rmtree(os.path.join(tmp, name))
            shutil.copytree(os.path.join(FIXTURES, "tiny-sdxl", name), os.path.join(tmp, name))
        reloaded = StableDiffusionXLInpaintPipeline.from_pretrained(tmp)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            a, b = module.state_dict(), getattr(reloaded, name).state_dict()
            if set(a) != set(b) or any(not torch.equal(a[k], b[k]) for k in a):
                raise SystemExit(f"tiny-sdxl-inpaint/{name}: reloaded weights differ from the saved ones")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"tiny-sdxl-inpaint: {size / 1e3:.0f} KB")
    return reloaded


def composed_folder(tmp):
    """tiny-sdxl-inpaint as the tests compose it: tiny-sdxl's other components beside its UNet and index."""
    for name in COMPONENTS:
        shutil.copytree(os.path.join(FIXTURES, "tiny-sdxl", name), os.path.join(tmp, name))
    shutil.copytree(os.path.join(FIXTURES, "tiny-sdxl-inpaint", "unet"), os.path.join(tmp, "unet"))
    shutil.copy(os.path.join(FIXTURES, "tiny-sdxl-inpaint", "model_index.json"), tmp)
    return tmp


def make_single_file(pipe):
    """single-file/tiny-sdxl-inpaint.safetensors: diffusers' converters give every tensor back and
    StableDiffusionXLInpaintPipeline.from_single_file(config=the composed folder) loads the folder's tensors
    (text_encoder_2 passed in, as fixture_single_file_sdxl.py explains)."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint, convert_open_clip_checkpoint,
                                                     infer_diffusers_model_type)
    from fixture_single_file_lora import vae_to_ldm
    from fixture_single_file_sdxl import (CLIP_PREFIX, OPEN_CLIP_BASE, assert_same, clip_to_ldm, open_clip_to_ldm,
                                          sdxl_unet_to_ldm)
    unet_sd, vae_sd, te2_sd = pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder_2.state_dict()
    te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in pipe.text_encoder.state_dict().items()}
    ldm = {**sdxl_unet_to_ldm(unet_sd, pipe.unet.config), **vae_to_ldm(vae_sd, pipe.vae.config),
           **open_clip_to_ldm(te2_sd, OPEN_CLIP_BASE), **clip_to_ldm(te_sd, CLIP_PREFIX)}
    ldm = {k: v.contiguous() for k, v in ldm.items()}
    # diffusers' infer_diffusers_model_type keys SDXL on a tenth OpenCLIP layer, which the tiny encoders lack: on the
    # headers of a real-sized file (conv_in 9 wide, that layer present) it says xl_inpaint.
    headers = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 9, 3, 3),
               "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(8)}
    assert infer_diffusers_model_type(headers) == "xl_inpaint", infer_diffusers_model_type(headers)
    assert_same("unet", unet_sd, convert_ldm_unet_checkpoint(ldm, pipe.unet.config))
    assert_same("vae", vae_sd, convert_ldm_vae_checkpoint(ldm, pipe.vae.config))
    assert_same("text_encoder_2", te2_sd, convert_open_clip_checkpoint(pipe.text_encoder_2, ldm, prefix=OPEN_CLIP_BASE))
    assert_same("text_encoder", te_sd, convert_ldm_clip_checkpoint(ldm))
    path = os.path.join(FIXTURES, "single-file", "tiny-sdxl-inpaint.safetensors")
    save_file(ldm, path)
    assert os.path.getsize(path) < 1_500_000, (path, os.path.getsize(path))
    os.chmod(path, 0o644)
    with tempfile.TemporaryDirectory() as tmp:
        single = StableDiffusionXLInpaintPipeline.from_single_file(path, config=composed_folder(tmp),
                                                                   local_files_only=True,
                                                                   text_encoder_2=pipe.text_encoder_2)
    for part in ["unet", "vae", "text_encoder", "text_encoder_2"]:
        a, b = getattr(pipe, part).state_dict(), getattr(single, part).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), part
    print("wrote", path, os.path.getsize(path), "bytes,", len(ldm), "tensors")


def make_low_variance_vae(vae):
    """tiny-sdxl's VAE with its encoder's log-variance pinned at -30 (quant_conv's second half: zero weights, bias
    -30): latent_dist.sample() is its mean within 3e-7 x the draw, so a run given `latents` makes diffusers' image
    whatever noise the VAE samples draw: the golden an API test without diffusers' noise can match. Saved as
    tiny-sdxl-inpaint/vae-low-variance/ (the `vae` load option)."""
    vae = copy.deepcopy(vae)
    with torch.no_grad():
        half = vae.config.latent_channels
        vae.quant_conv.weight[half:] = 0
        vae.quant_conv.bias[half:] = -30.0
    vae.save_pretrained(os.path.join(FIXTURES, "tiny-sdxl-inpaint", "vae-low-variance"), safe_serialization=True)
    return vae


@torch.no_grad()
def run(pipe, name, info, image, mask, **call):
    captured = {}
    given = call.get("latents")

    def on_step_end(p, i, t, kw):
        captured[f"latents_step_{i}"] = kw["latents"].clone()
        return {}

    with NoiseRecorder() as rec:
        out = pipe(image=image, mask_image=mask, **call, generator=torch.Generator().manual_seed(0), output_type="pt",
                   callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"]).images
    image_u8 = torch.from_numpy((out[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    tensors = {**captured, "image": out, "image_u8": image_u8}
    tensors.update({f"noise_{k}": v for k, v in enumerate(rec.draws)})
    if given is not None:
        tensors["initial_latents"] = given
        call = {k: v for k, v in call.items() if k != "latents"}
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(GOLDENS, f"{name}.safetensors"))
    write_json(os.path.join(GOLDENS, f"{name}.json"), {
        **call, **({"image": "images/input.png"} if isinstance(image, Image.Image) else {}), **info,
        "mask_image": "images/mask.png",
        "timesteps": pipe.scheduler.timesteps.tolist(), "unet_calls": len(captured), "noise_draws": len(rec.draws),
        "unet_in_channels": pipe.unet.config.in_channels, "pipeline": type(pipe).__name__,
        "scheduler_class": type(pipe.scheduler).__name__,
        "about": "StableDiffusionXLInpaintPipeline(image, mask_image, **call, generator=manual_seed(0), "
                 "output_type='pt') on the json's model (scripts/fixture_sdxl_inpaint.py); noise_k = the k-th "
                 "torch.randn draw; latents_step_i after UNet call i",
    })
    img = out.flatten()
    print(f"{name}: {len(captured)} UNet calls, {len(rec.draws)} draws, image mean {img.mean():.3f} std {img.std():.3f}")


def with_scheduler(pipe, cls):
    return type(pipe)(**{**pipe.components, "scheduler": cls.from_config(pipe.scheduler.config)})


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    image = Image.open(os.path.join(FIXTURES, "images", "input.png")).convert("RGB")
    mask = Image.open(os.path.join(FIXTURES, "images", "mask.png"))
    base = StableDiffusionXLPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl"))
    inpaint_4ch = StableDiffusionXLInpaintPipeline(**base.components)
    inpaint_9ch = make_inpaint_folder(base)
    make_single_file(inpaint_9ch)
    refiner_folder = StableDiffusionXLImg2ImgPipeline.from_pretrained(os.path.join(FIXTURES, "tiny-sdxl-refiner"))
    refiner = StableDiffusionXLInpaintPipeline(**refiner_folder.components, requires_aesthetics_score=True,
                                               force_zeros_for_empty_prompt=False)
    # The image's size (diffusers' default is the model's, 64x64; Candlewick's the image's).
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=5.0, height=32, width=32)
    # The base's 4-channel UNet (the known region blended back each step) at the pipeline's default strength
    # 0.9999: int(3 * 0.9999) = 2 of 3 steps, from the image's latents noised to the first of them.
    run(inpaint_4ch, "sdxl_inpaint_4ch", {"model": "tiny-sdxl", "scheduler": None}, image, mask,
        **common, num_inference_steps=3)
    # The 9-channel inpainting UNet at strength 1 (pure noise; the image is read only through the masked image).
    run(inpaint_9ch, "sdxl_inpaint_9ch", {"model": "tiny-sdxl-inpaint", "scheduler": None}, image, mask,
        **common, num_inference_steps=3, strength=1.0)
    # 9 channels with DDIM at strength 0.8, stopped at denoising_end 0.7 (2 of its 4 steps), no negative prompt (zero negative
    # embeddings), the size conditions set (the image-to-image time ids: each negative size defaults to its positive).
    run(with_scheduler(inpaint_9ch, DDIMScheduler), "sdxl_inpaint_9ch_ddim_end",
        {"model": "tiny-sdxl-inpaint", "scheduler": {"type": "DDIMScheduler"}}, image, mask,
        prompt=PROMPT, guidance_scale=6.0, height=32, width=32, num_inference_steps=5, strength=0.8, denoising_end=0.7, eta=0.0,
        original_size=(96, 128), crops_coords_top_left=(4, 8), target_size=(64, 48))
    # The refiner (text_encoder_2 only, aesthetic scores in the time ids) from denoising_start 0.6: the image's
    # latents not noised (add_noise=False), the known region blended each step.
    run(refiner, "sdxl_inpaint_refiner_start", {"model": "tiny-sdxl-refiner", "scheduler": None}, image, mask,
        **common, num_inference_steps=5, denoising_start=0.6, aesthetic_score=7.0, negative_aesthetic_score=2.0)
    # The base-to-refiner handoff as diffusers' SDXL inpainting docs run it: the base's latents at denoising_end 0.6
    # (output_type="latent") as the refiner's `image`, continued from denoising_start 0.6 (no VAE encode, no noise
    # added; the known region blended from those latents).
    with torch.no_grad():
        handoff = inpaint_4ch(image=image, mask_image=mask, **common, num_inference_steps=5, denoising_end=0.6,
                              generator=torch.Generator().manual_seed(0), output_type="latent").images
    save_file({"latents": handoff.contiguous()}, os.path.join(GOLDENS, "sdxl_inpaint_handoff_latents.safetensors"))
    run(refiner, "sdxl_inpaint_refiner_handoff", {"model": "tiny-sdxl-refiner", "scheduler": None,
                                                   "image_latents": "sdxl_inpaint_handoff_latents"}, handoff, mask,
        **common, num_inference_steps=5, denoising_start=0.6)
    # For the API tests (test/sdxl-inpaint.test.ts), which cannot replay diffusers' draws: the caller's `latents`
    # (diffusers' `latents`: the noise, in place of a draw; the run starts from them, whatever the strength) and the
    # low-variance VAE, whose samples are their mean.
    vae = make_low_variance_vae(base.vae)
    given = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(7))
    run(StableDiffusionXLInpaintPipeline(**{**inpaint_9ch.components, "vae": vae}), "sdxl_inpaint_api_9ch",
        {"model": "tiny-sdxl-inpaint", "vae": "tiny-sdxl-inpaint/vae-low-variance", "scheduler": None,
         "latents": "initial_latents"}, image, mask, **common, num_inference_steps=3, strength=1.0, latents=given)
    run(StableDiffusionXLInpaintPipeline(**{**inpaint_4ch.components, "vae": vae}), "sdxl_inpaint_api_4ch",
        {"model": "tiny-sdxl", "vae": "tiny-sdxl-inpaint/vae-low-variance", "scheduler": None,
         "latents": "initial_latents"}, image, mask, **common, num_inference_steps=3, latents=given)


if __name__ == "__main__":
    main()
