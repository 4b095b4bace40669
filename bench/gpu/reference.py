"""diffusers' side of the GPU parity check, run on the GPU test machine by bench/gpu/run.sh.

    python3 bench/gpu/reference.py OUTDIR        (PARITY_STEPS=20 by default; MODEL_ONLY=1: step 1 alone)

FAMILY=sd2 makes SD 2.1's shapes instead (768x768, v-prediction DDIM, OpenCLIP ViT-H text encoder,
linear projections, 64-wide heads, upcast attention: scripts/fixture_models.py's SD21_*).
FAMILY=sdxl makes SDXL base 1.0's (1024x1024, Euler, guidance 5, CLIP ViT-L + OpenCLIP bigG, the text_time
add embedding, 1/2/10 transformer layers, force_upcast VAE: SDXL_*), built and perturbed on the GPU (2.6B
UNet parameters), f32 files only (the f16 runs cast at load).

1. Makes SD1.5-shaped random weights in diffusers' folder layout in OUTDIR (f32 files and the
   fp16 variant; the real CLIP tokenizer files from test/fixtures/tiny-sd/tokenizer), with the
   configs and weight perturbation of scripts/fixture_models.py.
2. Runs StableDiffusionPipeline on CUDA from fixed initial latents (512x512, guidance 7.5, DDIM)
   in f32 with TF32 off, and writes OUTDIR/goldens.{safetensors,json}: initial_latents, the
   latents after every step, the image; the format of crates/candlewick-core/examples/full_size_check.rs.
3. Runs the same in fp16 and records diffusers' own fp16-vs-f32 error beside ours.
"""
import json
import os
import shutil
import sys
import time

import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fixture_models  # noqa: E402

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
STEPS = int(os.environ.get("PARITY_STEPS", 20))
FAMILY = os.environ.get("FAMILY", "sd15")
SIZE = {"sd2": 768, "sdxl": 1024}.get(FAMILY, 512)
GUIDANCE, SEED = (5.0 if FAMILY == "sdxl" else 7.5), 0


def add_text_model_prefix(folder):
    """SD1.5's text_encoder files carry the `text_model.` prefix that transformers 5 leaves out."""
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            path = os.path.join(folder, f)
            tensors = load_file(path)
            save_file({k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k: v
                       for k, v in tensors.items()}, path, metadata={"format": "pt"})


def copy_tokenizer(out_dir, name, pad=None):
    tok_dir = os.path.join(out_dir, name)
    shutil.rmtree(tok_dir, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "test/fixtures/tiny-sd/tokenizer"), tok_dir)
    if pad:  # SDXL's tokenizer_2 pads with "!"
        for f in ("tokenizer_config.json", "special_tokens_map.json"):
            path = os.path.join(tok_dir, f)
            with open(path) as h:
                config = json.load(h)
            config["pad_token"] = pad
            with open(path, "w") as h:
                json.dump(config, h, indent=1)
    return tok_dir


@torch.no_grad()
def make_sdxl(out_dir):
    m = fixture_models
    g = torch.Generator("cuda").manual_seed(SEED + 3)
    with torch.device("cuda"):
        parts = []
        for i, make in enumerate((lambda: CLIPTextModel(CLIPTextConfig(**m.SDXL_TEXT)),
                                  lambda: CLIPTextModelWithProjection(CLIPTextConfig(**m.SDXL_TEXT_2)),
                                  lambda: UNet2DConditionModel(**m.SDXL_UNET), lambda: AutoencoderKL(**m.SDXL_VAE))):
            torch.manual_seed(SEED + i)
            module = make().to(torch.float32)
            m.perturb(module, g)
            parts.append(module.eval())
    text_encoder, text_encoder_2, unet, vae = parts
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(copy_tokenizer(out_dir, "tokenizer")),
        tokenizer_2=CLIPTokenizer.from_pretrained(copy_tokenizer(out_dir, "tokenizer_2", pad="!")),
        unet=unet, scheduler=EulerDiscreteScheduler(**m.SDXL_SCHEDULER))
    # One file a component: diffusers shards anything over 10 GB (the f32 UNet is 10.3 GB).
    pipe.save_pretrained(out_dir, safe_serialization=True, max_shard_size="50GB")
    for name in ("text_encoder", "text_encoder_2"):
        add_text_model_prefix(os.path.join(out_dir, name))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_model(out_dir):
    if FAMILY == "sdxl":
        return make_sdxl(out_dir)
    tok_dir = copy_tokenizer(out_dir, "tokenizer")
    m = fixture_models
    configs = ((m.SD21_TEXT, m.SD21_UNET, m.SD21_VAE, SEED, m.SD21_SCHEDULER) if FAMILY == "sd2"
               else (m.SD15_TEXT, m.SD15_UNET, m.SD15_VAE, SEED))
    text_encoder, unet, vae, scheduler = fixture_models.build(*configs)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    pipe.to(torch.float16).save_pretrained(out_dir, safe_serialization=True, variant="fp16")
    pipe.to(torch.float32)
    add_text_model_prefix(os.path.join(out_dir, "text_encoder"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def run(pipe, latents, dtype):
    pipe.to("cuda", dtype)
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[f"latents_step_{i}"] = kwargs["latents"].float().cpu()
        return {}

    torch.cuda.synchronize()
    started = time.perf_counter()
    image = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                 width=SIZE, height=SIZE, eta=0.0, latents=latents.to("cuda", dtype), output_type="pt",
                 callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"]).images
    torch.cuda.synchronize()
    return captured, image.float().cpu(), time.perf_counter() - started


def main(out_dir):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    pipe = make_model(out_dir)
    made_s = time.perf_counter() - started
    if os.environ.get("MODEL_ONLY") == "1":
        print(f"model made in {made_s:.1f} s", flush=True)
        return
    g = torch.Generator().manual_seed(SEED + 30)
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=g)
    f32, image32, t32 = run(pipe, latents, torch.float32)
    f16, image16, t16 = run(pipe, latents, torch.float16)
    last = f"latents_step_{STEPS - 1}"
    rel16 = float((f16[last] - f32[last]).abs().max() / f32[last].abs().max())
    mse = float(((image16 - image32) ** 2).mean())
    save_file({"initial_latents": latents, **f32, "image": image32}, os.path.join(out_dir, "goldens.safetensors"))
    info = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS, "guidance_scale": GUIDANCE,
            "width": SIZE, "height": SIZE, "family": FAMILY, "reference": "diffusers f32 on CUDA, TF32 off",
            "torch_version": torch.__version__, "device": torch.cuda.get_device_name(),
            "seconds_make_model": made_s, "seconds_call_f32": t32, "seconds_call_f16": t16,
            "diffusers_f16_latents_rel": rel16,
            "diffusers_f16_psnr_db": float("inf") if mse == 0 else float(10 * torch.log10(torch.tensor(1.0 / mse)))}
    with open(os.path.join(out_dir, "goldens.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
