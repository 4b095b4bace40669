"""Tiny fixtures and goldens of the model families beyond SD1.x (issue 18): SD 2.x (v-prediction, linear
projections, gelu CLIP, upcast_attention), SD-Turbo's one trailing step without guidance, LCM (the UNet's
`time_cond_proj_dim` guidance embedding with LCMScheduler) and SDXL (two text encoders, `text_time` added
conditions, per-block transformer depths).

Configs follow diffusers' own pipeline tests (tests/pipelines/stable_diffusion_2/test_stable_diffusion.py,
latent_consistency_models/test_latent_consistency_models.py, stable_diffusion_xl/test_stable_diffusion_xl.py
`get_dummy_components`), narrowed (8/16 channels, a 1000-token CLIP vocabulary) to keep each folder under
a megabyte. Run through make_fixtures.py (`--families-only`); writes

  test/fixtures/tiny-sd2/, tiny-lcm/, tiny-sdxl/     folders in diffusers' layout (f32 weights)
  test/fixtures/goldens/family_<name>.{json,safetensors}

Each golden: the pipeline's call with generator=manual_seed(0); `noise_k` is the k-th torch.randn draw (the
initial latents first, then any step noise), `latents_step_i` the latents after UNet call i, `image` the
output in [0, 1] (output_type='pt'), `image_u8` = round(image * 255) HWC; extra tensors as named in the json.
"""

import json
import os
import shutil

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, LatentConsistencyModelPipeline,
                       LCMScheduler, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

import fixture_models
import fixture_tokenizer
from fixture_images import NoiseRecorder

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
SEED = 100
# A 1000-token CLIP vocabulary (the first 486 merges of the real one): the token embedding stays small.
MERGES = 486

TEXT = dict(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
            num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, hidden_act="gelu",
            projection_dim=32)
UNET_SD2 = dict(block_out_channels=(8, 16), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True, norm_num_groups=4)
UNET_LCM = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=4,
                time_cond_proj_dim=32)
UNET_SDXL = dict(block_out_channels=(8, 16), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                 transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
                 cross_attention_dim=64, norm_num_groups=4)
# The refiner: text_encoder_2 only (cross-attention 32 wide), 5 size conditions (aesthetic score last).
UNET_REFINER = {**UNET_SDXL, "cross_attention_dim": 32, "projection_class_embeddings_input_dim": 72}  # 5 * 8 + 32
VAE = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           norm_num_groups=4, sample_size=64)
SCALED_LINEAR = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def seeded(seed, make):
    torch.manual_seed(seed)
    model = make()
    fixture_models.perturb(model, torch.Generator().manual_seed(seed + 50))
    return model.eval().to(torch.float32)


def tokenizer(tmp, name, pad=None):
    path = os.path.join(tmp, name)
    fixture_tokenizer.write_tokenizer_folder(path, num_merges=MERGES, pad_token=pad)
    return CLIPTokenizer.from_pretrained(path), path


def save(pipe, folder, tokenizer_dirs):
    """save_pretrained, then the tokenizer folders as SD ships them and `text_model.` key prefixes restored."""
    shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    for name, src in tokenizer_dirs.items():
        shutil.rmtree(os.path.join(folder, name))
        shutil.copytree(src, os.path.join(folder, name))
    for name in ("text_encoder", "text_encoder_2"):
        path = os.path.join(folder, name, "model.safetensors")
        if os.path.exists(path):
            tensors = load_file(path)
            fixed = {k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k: v
                     for k, v in tensors.items()}
            save_file(fixed, path, metadata={"format": "pt"})
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
    print(f"{os.path.basename(folder)}: {size / 1e3:.0f} KB")
    reloaded = type(pipe).from_pretrained(folder, **({"safety_checker": None, "requires_safety_checker": False}
                                                     if isinstance(pipe, StableDiffusionPipeline) else {}))
    if isinstance(pipe, StableDiffusionXLImg2ImgPipeline):
        reloaded.register_to_config(requires_aesthetics_score=pipe.config.requires_aesthetics_score)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            a, b = module.state_dict(), getattr(reloaded, name).state_dict()
            if set(a) != set(b) or any(not torch.equal(a[k], b[k]) for k in a):
                raise SystemExit(f"{folder}/{name}: reloaded weights differ from the saved ones")
    return reloaded


@torch.no_grad()
def run(pipe, out_dir, name, info, extra_inputs=(), **call):
    """One call, every draw and every UNet call's latents recorded; writes family_<name>.*."""
    captured = {}

    def on_step_end(p, i, t, kw):
        captured[f"latents_step_{i}"] = kw["latents"].clone()
        for key in extra_inputs:
            captured[key] = kw[key].clone()
        return {}

    with NoiseRecorder() as rec:
        image = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="pt",
                     callback_on_step_end=on_step_end,
                     callback_on_step_end_tensor_inputs=["latents", *extra_inputs]).images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    tensors = {**captured, "image": image, "image_u8": image_u8}
    tensors.update({f"noise_{k}": v for k, v in enumerate(rec.draws)})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(out_dir, f"family_{name}.safetensors"))
    unet_calls = sum(k.startswith("latents_step_") for k in captured)
    write_json(os.path.join(out_dir, f"family_{name}.json"), {
        **{k: v for k, v in call.items() if k != "image"}, **info, "timesteps": pipe.scheduler.timesteps.tolist(), "unet_calls": unet_calls,
        "noise_draws": len(rec.draws), "pipeline": type(pipe).__name__,
        "scheduler_class": type(pipe.scheduler).__name__, "tensors": ["latents_step_i", *extra_inputs],
        "about": f"{type(pipe).__name__}(**call, generator=manual_seed(0), output_type='pt') on the json's "
                 "model (scripts/fixture_families.py); noise_k = the k-th torch.randn draw",
    })
    img = image.flatten()
    print(f"family_{name}: {unet_calls} UNet calls, {len(rec.draws)} draws, image mean {img.mean():.3f} "
          f"std {img.std():.3f}")


def with_scheduler(pipe, cls, **overrides):
    return type(pipe)(**{**pipe.components, "scheduler": cls.from_config(pipe.scheduler.config, **overrides)})


def make_sd2(fixtures, goldens, tmp):
    tok, tok_dir = tokenizer(tmp, "tok")
    text_encoder = seeded(SEED, lambda: CLIPTextModel(CLIPTextConfig(**TEXT)))
    unet = seeded(SEED + 1, lambda: UNet2DConditionModel(**UNET_SD2))
    vae = seeded(SEED + 2, lambda: AutoencoderKL(**VAE))
    # SD2's 768 model: v-prediction with DDIM (stabilityai/stable-diffusion-2-1's scheduler_config.json).
    scheduler = DDIMScheduler(**SCALED_LINEAR, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = save(pipe, os.path.join(fixtures, "tiny-sd2"), {"tokenizer": tok_dir})
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=7.5)
    run(pipe, goldens, "sd2_ddim", {"model": "tiny-sd2", "scheduler": None}, extra_inputs=("prompt_embeds",), **call,
        eta=0.0)
    run(with_scheduler(pipe, EulerDiscreteScheduler), goldens, "sd2_euler",
        {"model": "tiny-sd2", "scheduler": {"type": "EulerDiscreteScheduler"}}, **call)
    # clip_skip 1: the penultimate layer's output through final_layer_norm (the negative prompt unskipped).
    # diffusers 0.42 reads `text_encoder.text_model.final_layer_norm`, which transformers 5 flattened into
    # `text_encoder.final_layer_norm`: give it the old path (the same module).
    if not hasattr(pipe.text_encoder, "text_model"):
        import types
        pipe.text_encoder.text_model = types.SimpleNamespace(final_layer_norm=pipe.text_encoder.final_layer_norm)
    run(pipe, goldens, "sd2_clip_skip", {"model": "tiny-sd2", "scheduler": None}, extra_inputs=("prompt_embeds",),
        prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2, guidance_scale=7.5, clip_skip=1, eta=0.0)
    # SD-Turbo: SD2.1's layout, EulerDiscrete with trailing spacing, one step, no guidance.
    run(with_scheduler(pipe, EulerDiscreteScheduler, timestep_spacing="trailing", prediction_type="epsilon"),
        goldens, "sd2_turbo",
        {"model": "tiny-sd2", "scheduler": {"type": "EulerDiscreteScheduler", "timestep_spacing": "trailing",
                                            "prediction_type": "epsilon"}},
        prompt=PROMPT, num_inference_steps=1, guidance_scale=0.0)


def make_lcm(fixtures, goldens, tmp):
    tok, tok_dir = tokenizer(tmp, "tok")
    text_encoder = seeded(SEED + 10, lambda: CLIPTextModel(CLIPTextConfig(**{**TEXT, "hidden_act": "quick_gelu"})))
    unet = seeded(SEED + 11, lambda: UNet2DConditionModel(**UNET_LCM))
    vae = seeded(SEED + 12, lambda: AutoencoderKL(**VAE))
    scheduler = LCMScheduler(**SCALED_LINEAR, clip_sample=False, set_alpha_to_one=False)
    pipe = LatentConsistencyModelPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe = save(pipe, os.path.join(fixtures, "tiny-lcm"), {"tokenizer": tok_dir})
    settings = dict(prompt=PROMPT, num_inference_steps=4, guidance_scale=8.5)
    run(pipe, goldens, "lcm", {"model": "tiny-lcm", "scheduler": None}, extra_inputs=("denoised", "w_embedding"), **settings)


def make_sdxl(fixtures, goldens, tmp):
    tok, tok_dir = tokenizer(tmp, "tok")
    tok_2, tok_2_dir = tokenizer(tmp, "tok2", pad="!")  # SDXL's tokenizer_2 pads with "!"
    text_encoder = seeded(SEED + 20, lambda: CLIPTextModel(CLIPTextConfig(**TEXT)))
    text_encoder_2 = seeded(SEED + 21, lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TEXT)))
    unet = seeded(SEED + 22, lambda: UNet2DConditionModel(**UNET_SDXL))
    vae = seeded(SEED + 23, lambda: AutoencoderKL(**VAE, scaling_factor=0.13025, force_upcast=True))
    scheduler = EulerDiscreteScheduler(**SCALED_LINEAR, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok,
                                     tokenizer_2=tok_2, unet=unet, scheduler=scheduler)
    pipe = save(pipe, os.path.join(fixtures, "tiny-sdxl"), {"tokenizer": tok_dir, "tokenizer_2": tok_2_dir})
    extra = ("prompt_embeds", "add_text_embeds", "add_time_ids")
    settings = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0)
    run(pipe, goldens, "sdxl_euler", {"model": "tiny-sdxl", "scheduler": None}, extra_inputs=extra,
        **settings)
    # denoising_end: the base's part of a base-to-refiner handoff (the first 60% of the schedule).
    run(pipe, goldens, "sdxl_denoising_end", {"model": "tiny-sdxl", "scheduler": None}, prompt=PROMPT,
        negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=5.0, denoising_end=0.6)
    # No negative prompt (force_zeros_for_empty_prompt: zero negative embeddings), the size conditions set,
    # another scheduler.
    sized = dict(prompt=PROMPT, num_inference_steps=3, guidance_scale=6.0, original_size=(96, 128),
                 crops_coords_top_left=(4, 8), target_size=(64, 48), negative_original_size=(32, 40),
                 negative_crops_coords_top_left=(0, 2), negative_target_size=(64, 64), clip_skip=1)
    run(with_scheduler(pipe, DDIMScheduler), goldens, "sdxl_ddim_sized",
        {"model": "tiny-sdxl", "scheduler": {"type": "DDIMScheduler"}}, extra_inputs=extra, **sized, eta=0.0)
    return pipe


def make_refiner(fixtures, goldens, tmp, base):
    """The SDXL refiner (StableDiffusionXLImg2ImgPipeline without text_encoder): image to image from
    images/input.png, and the base-to-refiner handoff (the base's latents at denoising_end 0.6, then the
    refiner from denoising_start 0.6)."""
    _, tok_2_dir = tokenizer(tmp, "tok2r", pad="!")
    tok_2 = CLIPTokenizer.from_pretrained(tok_2_dir)
    text_encoder_2 = seeded(SEED + 30, lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TEXT)))
    unet = seeded(SEED + 31, lambda: UNet2DConditionModel(**UNET_REFINER))
    refiner = StableDiffusionXLImg2ImgPipeline(vae=base.vae, text_encoder=None, text_encoder_2=text_encoder_2,
                                               tokenizer=None, tokenizer_2=tok_2, unet=unet, scheduler=base.scheduler,
                                               requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    refiner = save(refiner, os.path.join(fixtures, "tiny-sdxl-refiner"), {"tokenizer_2": tok_2_dir})
    image = Image.open(os.path.join(fixtures, "images", "input.png")).convert("RGB")
    run(refiner, goldens, "sdxl_refiner_img2img", {"model": "tiny-sdxl-refiner", "scheduler": None,
                                                    "image": "images/input.png"},
        prompt=PROMPT, negative_prompt=NEGATIVE, image=image, strength=0.6, num_inference_steps=5, guidance_scale=5.0,
        aesthetic_score=7.0, negative_aesthetic_score=2.0)
    # The handoff: the base's latents (output_type="latent") into the refiner.
    with torch.no_grad():
        handoff = base(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=5.0,
                       denoising_end=0.6, generator=torch.Generator().manual_seed(0), output_type="latent").images
    save_file({"latents": handoff.contiguous()}, os.path.join(goldens, "family_sdxl_handoff_latents.safetensors"))
    run(refiner, goldens, "sdxl_refiner_handoff", {"model": "tiny-sdxl-refiner", "scheduler": None,
                                                    "image_latents": "family_sdxl_handoff_latents"},
        prompt=PROMPT, negative_prompt=NEGATIVE, image=handoff, num_inference_steps=5, guidance_scale=5.0,
        denoising_start=0.6)


def make(fixtures):
    import tempfile
    goldens = os.path.join(fixtures, "goldens")
    tmp = tempfile.mkdtemp()
    try:
        make_sd2(fixtures, goldens, tmp)
        make_lcm(fixtures, goldens, tmp)
        base = make_sdxl(fixtures, goldens, tmp)
        make_refiner(fixtures, goldens, tmp, base)
    finally:
        shutil.rmtree(tmp)
