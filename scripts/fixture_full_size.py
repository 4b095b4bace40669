"""--full-size OUTDIR: SD1.5-shaped random weights in diffusers' layout plus diffusers' CPU timings, for benchmarks
(outputs are never committed: about 4 GB of f32 weights).

Writes OUTDIR/{model_index.json, text_encoder/, tokenizer/, unet/, vae/, scheduler/} (f32, real CLIP tokenizer,
SD1.5's real configs, perturbed random weights), then runs StableDiffusionPipeline for 2 DDIM steps at 512x512
from fixed latents (guidance 7.5, torch on 2 CPU threads) and writes OUTDIR/goldens.safetensors
(initial_latents, prompt_embeds, latents_step_0, latents_step_1, image) and OUTDIR/goldens.json (settings and
wall-clock seconds). --smoke uses the tiny fixture shapes at 64x64 to test this code path quickly.
"""

import json
import os
import shutil
import time

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file
from transformers import CLIPTokenizer

import fixture_models
import fixture_tokenizer

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
STEPS = 2
GUIDANCE = 7.5
SEED = 0


@torch.no_grad()
def run(out_dir, smoke=False):
    torch.set_num_threads(2)
    if smoke:
        configs, size = (fixture_models.TINY_TEXT, fixture_models.TINY_UNET, fixture_models.TINY_VAE), 64
    else:
        configs, size = (fixture_models.SD15_TEXT, fixture_models.SD15_UNET, fixture_models.SD15_VAE), 512
    os.makedirs(out_dir, exist_ok=True)
    tok_dir = os.path.join(out_dir, "tokenizer")
    shutil.rmtree(tok_dir, ignore_errors=True)
    fixture_tokenizer.write_tokenizer_folder(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    started = time.perf_counter()
    text_encoder, unet, vae, scheduler = fixture_models.build(*configs, SEED)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    shutil.rmtree(tok_dir)
    fixture_tokenizer.write_tokenizer_folder(tok_dir)
    fixture_models.add_text_model_prefix(os.path.join(out_dir, "text_encoder"))
    print(f"weights written to {out_dir} in {time.perf_counter() - started:.1f} s")

    g = torch.Generator().manual_seed(SEED + 30)
    scale = pipe.vae_scale_factor
    latents = torch.randn(1, unet.config.in_channels, size // scale, size // scale, generator=g)
    captured, marks = {}, {}

    def first_unet_call(module, args):
        marks.setdefault("loop_start", time.perf_counter())

    def on_step_end(p, i, t, kwargs):
        marks[f"step_{i}_end"] = time.perf_counter()
        captured[f"latents_step_{i}"] = kwargs["latents"].clone()
        captured["prompt_embeds"] = kwargs["prompt_embeds"].clone()
        return {}

    hook = unet.register_forward_pre_hook(first_unet_call)
    call_start = time.perf_counter()
    image = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
        width=size, height=size, eta=0.0, latents=latents.clone(), output_type="pt",
        callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    ).images
    call_end = time.perf_counter()
    hook.remove()

    tensors = {"initial_latents": latents, **captured, "image": image}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "goldens.safetensors"))
    step_ends = [marks[f"step_{i}_end"] for i in range(STEPS)]
    info = {
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS, "guidance_scale": GUIDANCE,
        "width": size, "height": size, "eta": 0.0, "latents_seed": SEED + 30, "smoke": smoke,
        "timesteps": pipe.scheduler.timesteps.tolist(),
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "seconds_steps": step_ends[-1] - marks["loop_start"],
        "seconds_per_step": [b - a for a, b in zip([marks["loop_start"]] + step_ends[:-1], step_ends)],
        "seconds_call": call_end - call_start,
        "seconds_before_loop": marks["loop_start"] - call_start,
        "seconds_after_loop": call_end - step_ends[-1],
        "image_mean": float(image.mean()), "image_std": float(image.std()),
    }
    with open(os.path.join(out_dir, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(json.dumps(info, indent=1))
