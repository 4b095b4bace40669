"""Makes Candlewick's test fixtures and goldens from diffusers / transformers (CPU, float32, fixed seeds).

Run from the repository root:

    python -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt \
        && .venv/bin/python scripts/make_fixtures.py

Writes (formats: docs/CONTRACTS.md, "Fixtures and goldens"; description: test/fixtures/README.md):
  test/fixtures/tiny-sd/     tiny random Stable Diffusion model in diffusers' folder layout (real CLIP
                             vocabulary), f32 weights plus *.fp16.safetensors variants
  test/fixtures/goldens/     tokens.json, clip_tokenizer_reference.json, text_encoder.*, unet.safetensors,
                             vae.safetensors, ddim.json, schedulers.*, pipeline.*, img2img_*, inpaint_*,
                             image_inputs.safetensors (fixture_images.py), vae_tiling.* (fixture_vae_tiling.py)
  test/fixtures/images/      input.png, mask.png: the img2img / inpainting inputs (fixture_images.py)
  test/fixtures/tiny-sd-inpaint/  a 9-channel inpainting UNet beside tiny-sd's other components
  test/fixtures/tiny-sd2/, tiny-lcm/, tiny-sdxl/, goldens/family_*  the model families (fixture_families.py)
  test/fixtures/tiny-sdxl-inpaint/, goldens/sdxl_inpaint_*  SDXL inpainting (fixture_sdxl_inpaint.py)
  test/fixtures/images/mask_corner.png, goldens/mask_crop_*  inpainting with padding_mask_crop
                             (fixture_padding_mask_crop.py)
  test/fixtures/goldens/sdxl_prompt_weighting.*  SDXL's weighted and long prompts, compel 2.5.1
                             (fixture_sdxl_prompt_weighting.py)
  test/fixtures/textual-inversion/sdxl-*.safetensors, goldens/sdxl_textual_inversion.*  SDXL's clip_l/clip_g
                             embeddings and diffusers' encode_prompt with them (fixture_sdxl_textual_inversion.py)

    .venv/bin/python scripts/make_fixtures.py --full-size OUTDIR [--smoke]

instead writes SD1.5-shaped random weights (f32, diffusers' layout) to OUTDIR and times diffusers on a 2-step
512x512 run (never committed; see fixture_full_size.py).
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file
from transformers import CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_ddim  # noqa: E402
import fixture_families  # noqa: E402
import fixture_sdxl_prompt_2  # noqa: E402
import fixture_sdxl_prompt_weighting  # noqa: E402
import fixture_sdxl_textual_inversion  # noqa: E402
import fixture_images  # noqa: E402
import fixture_vae_tiling  # noqa: E402
import fixture_models  # noqa: E402
import fixture_prompts  # noqa: E402
import fixture_schedulers  # noqa: E402
import fixture_tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "test", "fixtures")
TINY = os.path.join(FIXTURES, "tiny-sd")
GOLDENS = os.path.join(FIXTURES, "goldens")
SEED = 0
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def save_tensors(path, tensors):
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path)


def folder_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def check_reload(pipe, reloaded):
    """The committed files must hold exactly the in-memory weights (catches a key layout transformers skips)."""
    for name in ("text_encoder", "unet", "vae"):
        a, b = getattr(pipe, name).state_dict(), getattr(reloaded, name).state_dict()
        if set(a) != set(b) or any(not torch.equal(a[k], b[k]) for k in a):
            raise SystemExit(f"{name}: weights reloaded from {TINY} differ from the saved ones")


def make_tiny_model():
    """Builds the tiny pipeline, saves it (f32 + fp16 variants) to test/fixtures/tiny-sd, returns it reloaded."""
    tmp = tempfile.mkdtemp()
    fixture_tokenizer.write_tokenizer_folder(os.path.join(tmp, "tokenizer"))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(tmp, "tokenizer"))
    text_encoder, unet, vae, scheduler = fixture_models.build(
        fixture_models.TINY_TEXT, fixture_models.TINY_UNET, fixture_models.TINY_VAE, SEED
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    shutil.rmtree(TINY, ignore_errors=True)
    pipe.save_pretrained(TINY, safe_serialization=True)
    # The tokenizer folder as SD1.5 ships it (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json).
    shutil.rmtree(os.path.join(TINY, "tokenizer"))
    fixture_tokenizer.write_tokenizer_folder(os.path.join(TINY, "tokenizer"))
    # fp16 variants beside the f32 weights.
    half_dir = os.path.join(tmp, "fp16")
    for name, model in (("text_encoder", text_encoder), ("unet", unet), ("vae", vae)):
        copy.deepcopy(model).half().save_pretrained(os.path.join(half_dir, name), safe_serialization=True,
                                                     variant="fp16")
        for f in os.listdir(os.path.join(half_dir, name)):
            if f.endswith(".fp16.safetensors"):
                shutil.copy(os.path.join(half_dir, name, f), os.path.join(TINY, name, f))
    shutil.rmtree(tmp)
    fixture_models.add_text_model_prefix(os.path.join(TINY, "text_encoder"))
    print(f"tiny-sd: {folder_size(TINY) / 1e6:.2f} MB")
    reloaded = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None, requires_safety_checker=False)
    check_reload(pipe, reloaded)
    return reloaded


def make_tokens(tok):
    """tokens.json: ids exactly as StableDiffusionPipeline.encode_prompt tokenizes, plus its truncation warning."""
    entries = []
    for prompt in fixture_prompts.TOKEN_PROMPTS:
        ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        untruncated = tok(prompt, padding="longest", return_tensors="pt").input_ids
        truncated = bool(untruncated.shape[-1] >= ids.shape[-1] and not torch.equal(ids, untruncated))
        text = tok.batch_decode(untruncated[:, tok.model_max_length - 1 : -1])[0] if truncated else None
        entries.append({
            "prompt": prompt,
            "input_ids": ids[0].tolist(),
            "num_tokens": int(untruncated.shape[-1]),
            "truncated": truncated,
            "truncated_text": text,
        })
    write_json(os.path.join(GOLDENS, "tokens.json"), {
        "about": "transformers CLIPTokenizer(padding='max_length', truncation=True, max_length=77); num_tokens is "
                 "the untruncated length incl. bos/eos; truncated/truncated_text as StableDiffusionPipeline."
                 "encode_prompt decides and prints them (tokenizer.batch_decode(untruncated_ids[:, 76:-1])[0]).",
        "tokenizer_class": type(tok).__name__,
        "tokenizer_module": type(tok).__module__,
        "transformers_version": __import__("transformers").__version__,
        "prompts": entries,
    })
    # The backend `tokenizers` pipeline transformers builds, minus vocab and merges (they are exactly
    # tiny-sd/tokenizer/vocab.json and merges.txt; put them back under "model" to load it with the tokenizers crate).
    reference = json.loads(tok.backend_tokenizer.to_str())
    reference["model"]["vocab"] = {}
    reference["model"]["merges"] = []
    write_json(os.path.join(GOLDENS, "clip_tokenizer_reference.json"), reference)
    print(f"tokens.json: {len(entries)} prompts, {sum(e['truncated'] for e in entries)} truncated")


@torch.no_grad()
def make_text_encoder(pipe):
    tensors = {}
    for i, prompt in enumerate(fixture_prompts.TEXT_ENCODER_PROMPTS):
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        tensors[f"input_ids_{i}"] = ids.to(torch.int64)
        tensors[f"last_hidden_state_{i}"] = pipe.text_encoder(ids)[0]
    save_tensors(os.path.join(GOLDENS, "text_encoder.safetensors"), tensors)
    write_json(os.path.join(GOLDENS, "text_encoder.json"), {
        "about": "last_hidden_state_i = CLIPTextModel(input_ids_i)[0] (no attention mask, as SD1.5's encode_prompt)",
        "prompts": fixture_prompts.TEXT_ENCODER_PROMPTS,
    })
    print("text_encoder: max |h| =", max(float(v.abs().max()) for k, v in tensors.items() if "hidden" in k))


@torch.no_grad()
def make_unet(pipe):
    g = torch.Generator().manual_seed(SEED + 10)
    hidden = pipe.text_encoder.config.hidden_size
    sample = torch.randn(2, 4, 32, 32, generator=g)
    timestep = torch.tensor([981.0])
    ehs = torch.randn(2, 77, hidden, generator=g)
    out = pipe.unet(sample, timestep, encoder_hidden_states=ehs).sample
    save_tensors(os.path.join(GOLDENS, "unet.safetensors"),
                 {"sample": sample, "timestep": timestep, "encoder_hidden_states": ehs, "out": out})
    print(f"unet: out std {out.std():.4f} max {out.abs().max():.4f}")


@torch.no_grad()
def make_vae(pipe):
    g = torch.Generator().manual_seed(SEED + 20)
    sf = pipe.vae.config.scaling_factor
    decode_in = torch.randn(1, 4, 32, 32, generator=g) / sf
    decode_out = pipe.vae.decode(decode_in).sample
    encode_in = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    dist = pipe.vae.encode(encode_in).latent_dist
    save_tensors(os.path.join(GOLDENS, "vae.safetensors"), {
        "decode_in": decode_in, "decode_out": decode_out,
        "encode_in": encode_in, "encode_mean": dist.mean, "encode_logvar": dist.logvar,
    })
    print(f"vae: decode_out std {decode_out.std():.4f} max {decode_out.abs().max():.4f}; "
          f"mean std {dist.mean.std():.4f} logvar range {dist.logvar.min():.3f}..{dist.logvar.max():.3f}")


@torch.no_grad()
def make_pipeline(pipe, steps=5, guidance=7.5, size=64, out_dir=GOLDENS, name="pipeline", scheduler=None):
    """scheduler: (diffusers class name, overrides) swapped in as `Class.from_config(pipe.scheduler.config, **overrides)`."""
    if scheduler is not None:
        import diffusers
        cls, overrides = scheduler
        pipe = StableDiffusionPipeline(**{**pipe.components, "scheduler": getattr(diffusers, cls).from_config(
            pipe.scheduler.config, **overrides)})
    g = torch.Generator().manual_seed(SEED + 30)
    scale = pipe.vae_scale_factor
    latents = torch.randn(1, pipe.unet.config.in_channels, size // scale, size // scale, generator=g)
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[f"latents_step_{i}"] = kwargs["latents"].clone()
        captured["prompt_embeds"] = kwargs["prompt_embeds"].clone()
        return {}

    result = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance,
        width=size, height=size, eta=0.0, latents=latents.clone(), output_type="pt",
        callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    image = result.images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    save_tensors(os.path.join(out_dir, f"{name}.safetensors"),
                 {"initial_latents": latents, **captured, "image": image, "image_u8": image_u8})
    write_json(os.path.join(out_dir, f"{name}.json"), {
        "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": steps, "guidance_scale": guidance,
        "width": size, "height": size, "scheduler_overrides": {"eta": 0.0},
        "timesteps": pipe.scheduler.timesteps.tolist(), "latents_seed": SEED + 30,
        "scheduler": None if scheduler is None else {"type": scheduler[0], **scheduler[1]},
        "about": "StableDiffusionPipeline(...)(latents=initial_latents, output_type='pt'); latents_step_i after "
                 "step i (callback_on_step_end); prompt_embeds = [uncond; cond]; image_u8 = round(image*255) HWC",
    })
    img = image.flatten()
    print(f"{name}: image mean {img.mean():.3f} std {img.std():.3f}, saturated {(img <= 0).float().mean():.3f}/"
          f"{(img >= 1).float().mean():.3f}, last latents max {captured[f'latents_step_{steps - 1}'].abs().max():.3f}")


def make_scheduler_goldens(pipe):
    """Every scheduler alone (fixture_schedulers.py) and, for the deterministic ones, the whole 5-step pipeline."""
    fixture_schedulers.make(GOLDENS)
    for name, cls, overrides in fixture_schedulers.PIPELINE_CASES:
        make_pipeline(pipe, name=f"pipeline_{name}", scheduler=(cls, overrides))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", metavar="OUTDIR", help="SD1.5-shaped random weights + timing (not committed)")
    parser.add_argument("--smoke", action="store_true", help="with --full-size: tiny shapes, to test the code path")
    parser.add_argument("--images-only", action="store_true",
                        help="only the img2img / inpainting goldens (fixture_images.py) from the committed tiny-sd")
    parser.add_argument("--vae-tiling-only", action="store_true",
                        help="only the tiled VAE decode goldens (fixture_vae_tiling.py) from the committed tiny-sd")
    parser.add_argument("--families-only", action="store_true",
                        help="only the model families' fixtures (tiny-sd2, tiny-lcm, tiny-sdxl) and family_* goldens")
    parser.add_argument("--schedulers-only", action="store_true",
                        help="only the scheduler goldens (schedulers.*, pipeline_<scheduler>.*) from the committed tiny-sd")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    if args.full_size:
        import fixture_full_size
        fixture_full_size.run(args.full_size, smoke=args.smoke)
        return
    torch.set_num_threads(2)
    os.makedirs(GOLDENS, exist_ok=True)
    if args.vae_tiling_only:
        fixture_vae_tiling.make(TINY, GOLDENS)
        return
    if args.families_only:
        fixture_families.make(FIXTURES)
        fixture_sdxl_prompt_2.main()
        fixture_sdxl_prompt_weighting.main()
        fixture_sdxl_textual_inversion.main()
        return
    if args.images_only:
        fixture_images.make(TINY, FIXTURES)
        import fixture_padding_mask_crop
        fixture_padding_mask_crop.main()
        return
    if args.schedulers_only:
        make_scheduler_goldens(StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None,
                                                                       requires_safety_checker=False))
        return
    pipe = make_tiny_model()
    make_tokens(pipe.tokenizer)
    make_text_encoder(pipe)
    make_unet(pipe)
    make_vae(pipe)
    fixture_ddim.make(os.path.join(GOLDENS, "ddim.json"))
    make_pipeline(pipe)
    make_scheduler_goldens(pipe)
    fixture_images.make(TINY, FIXTURES)
    fixture_vae_tiling.make(TINY, GOLDENS)
    fixture_families.make(FIXTURES)
    # SDXL's prompt_2 / negative_prompt_2 on tiny-sdxl and tiny-sdxl-refiner (just written).
    fixture_sdxl_prompt_2.main()
    # SDXL's long and weighted prompts (compel 2.5.1's CompelForSDXL) on tiny-sdxl and tiny-sdxl-refiner.
    fixture_sdxl_prompt_weighting.main()
    # SDXL textual inversion (clip_l/clip_g embeddings, both tokenizers) on tiny-sdxl and tiny-sdxl-refiner.
    fixture_sdxl_textual_inversion.main()
    # Single-file checkpoint and LoRA fixtures, from the tiny model just written (needs peft).
    import fixture_single_file_lora
    fixture_single_file_lora.main()
    # SDXL base and refiner single files, from tiny-sdxl / tiny-sdxl-refiner (fixture_families.py above).
    import fixture_single_file_sdxl
    fixture_single_file_sdxl.main()
    # A kohya SDXL LoRA (both text encoders and the UNet) and diffusers' fused run of it on tiny-sdxl.
    import fixture_sdxl_lora
    fixture_sdxl_lora.main()
    # SDXL inpainting (4- and 9-channel UNets, the refiner) on tiny-sdxl, with a 9-channel tiny-sdxl-inpaint UNet.
    import fixture_sdxl_inpaint
    fixture_sdxl_inpaint.main()
    # Inpainting with padding_mask_crop on tiny-sd and tiny-sd-inpaint (fixture_images.py's inputs and UNet).
    import fixture_padding_mask_crop
    fixture_padding_mask_crop.main()
    # Checks only: the sharded folders the tests write are diffusers' format (fixture_sharded.py).
    import fixture_sharded
    fixture_sharded.main()
    print(f"fixtures: {folder_size(FIXTURES) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
