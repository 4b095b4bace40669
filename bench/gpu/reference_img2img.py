"""diffusers' side of the full-size img2img parity check (issue 17): StableDiffusionImg2ImgPipeline on a model
folder (the SD1.5-shaped one bench/gpu/reference.py makes), f32 with TF32 off, every standard-normal draw recorded
in order as scripts/fixture_images.py does; crates/candlewick-core/examples/img2img_check.rs replays them.

    python3 bench/gpu/reference_img2img.py MODEL_DIR [--out DIR] [--device cuda|cpu] [--size 512] [--steps 20]
                                           [--strength 0.6] [--inpaint]

--inpaint runs StableDiffusionInpaintPipeline instead (the model's 4-channel UNet: diffusers blends the kept region
back each step; a 9-channel inpainting UNet reads the mask) with mask.png, a white rectangle (repaint) on black,
written beside init.png. An SDXL folder (model_index.json's _class_name starts with StableDiffusionXL) runs
StableDiffusionXLImg2ImgPipeline / StableDiffusionXLInpaintPipeline.

Writes to DIR (default MODEL_DIR/img2img):
  init.png                 a SIZE x SIZE RGB picture (gradients, a disc, a bar), made deterministically
  goldens.safetensors      noise_<k> (the k-th torch.randn draw: the VAE's latent_dist.sample, then the add_noise
                           noise, then any step noise), latents_step_<i> after UNet call i, image (NCHW in [0, 1]),
                           image_u8 (HWC)
  goldens.json             the call's options, the draw and call counts, timesteps, timing
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionXLInpaintPipeline)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from fixture_images import NoiseRecorder  # noqa: E402

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
GUIDANCE, SEED = 7.5, 0


def make_init_image(size, path):
    """Gradients in red and green, a disc in blue, a bar across: every channel varies (fixture_images' picture,
    scaled to `size`)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    r = 255 * x / (size - 1)
    g = 255 * y / (size - 1)
    b = np.where((x - 0.625 * size) ** 2 + (y - 0.375 * size) ** 2 < (0.22 * size) ** 2, 230.0, 40.0)
    g = np.where((y > 0.69 * size) & (y < 0.84 * size), 200.0, g)
    rgb = np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(path)
    return Image.open(path).convert("RGB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.6)
    ap.add_argument("--inpaint", action="store_true")
    a = ap.parse_args()
    out = a.out or os.path.join(a.model_dir, "img2img")
    os.makedirs(out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    image = make_init_image(a.size, os.path.join(out, "init.png"))
    with open(os.path.join(a.model_dir, "model_index.json")) as f:
        sdxl = json.load(f)["_class_name"].startswith("StableDiffusionXL")
    extra, cls = {}, StableDiffusionXLImg2ImgPipeline if sdxl else StableDiffusionImg2ImgPipeline
    if a.inpaint:
        mask = np.zeros((a.size, a.size), np.uint8)
        mask[a.size // 4: a.size * 3 // 4, a.size // 8: a.size * 5 // 8] = 255
        Image.fromarray(mask, "L").save(os.path.join(out, "mask.png"))
        extra = {"mask_image": Image.open(os.path.join(out, "mask.png")), "height": a.size, "width": a.size}
        cls = StableDiffusionXLInpaintPipeline if sdxl else StableDiffusionInpaintPipeline
    no_checker = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(a.model_dir, **no_checker, torch_dtype=torch.float32)
    pipe.to(a.device)
    pipe.set_progress_bar_config(disable=True)
    captured = {}

    def on_step_end(p, i, t, kw):
        captured[f"latents_step_{i}"] = kw["latents"].float().cpu()
        return {}

    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    with torch.no_grad(), NoiseRecorder() as rec:
        sync()
        started = time.perf_counter()
        # A CPU generator: diffusers' randn_tensor draws on the CPU and moves the noise to the device.
        result = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, strength=a.strength,
                      **extra, num_inference_steps=a.steps, guidance_scale=GUIDANCE, eta=0.0,
                      generator=torch.Generator().manual_seed(SEED), output_type="pt",
                      callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
        sync()
        seconds = time.perf_counter() - started
    picture = result.images.float().cpu()
    image_u8 = torch.from_numpy((picture[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    tensors = {**captured, "image": picture, "image_u8": image_u8}
    tensors.update({f"noise_{k}": v.float().cpu() for k, v in enumerate(rec.draws)})
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "goldens.safetensors"))
    info = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": a.steps, "guidance_scale": GUIDANCE,
            "strength": a.strength, "image": "init.png", **({"mask_image": "mask.png"} if a.inpaint else {}), "width": a.size, "height": a.size,
            "timesteps": pipe.scheduler.timesteps.tolist(), "unet_calls": len(captured),
            "noise_draws": len(rec.draws), "scheduler": pipe.scheduler.__class__.__name__,
            "reference": f"diffusers {cls.__name__} f32 on {a.device}, TF32 off",
            "torch_version": torch.__version__,
            "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
            "seconds_call": seconds,
            "about": f"{cls.__name__}(image=init.png, strength, eta=0, generator=manual_seed(0) on "
                     "the CPU, output_type='pt'); noise_k = the k-th torch.randn draw; latents_step_i after UNet "
                     "call i"}
    with open(os.path.join(out, "goldens.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in info.items() if k != "timesteps"}), flush=True)


if __name__ == "__main__":
    main()
