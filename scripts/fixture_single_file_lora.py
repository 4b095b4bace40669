"""Single-file checkpoint and LoRA fixtures from the committed tiny model (test/fixtures/tiny-sd).

Run: /work/main/.venv/bin/python scripts/fixture_single_file_lora.py   (diffusers 0.42.1, peft; CPU)

Writes test/fixtures/single-file/:
  tiny-sd.safetensors        tiny-sd's (f16) UNet, VAE and text encoder in the original Stable Diffusion layout
                             (model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*),
                             written by the inverse of diffusers' convert_ldm_*_checkpoint (the mapping of diffusers'
                             scripts/convert_diffusers_to_original_stable_diffusion.py) and checked here by diffusers'
                             own forward conversion (every tensor back, bit for bit) and by
                             StableDiffusionPipeline.from_single_file(config=tiny-sd) offline.
  tiny-sd.ckpt               a few bytes named .ckpt, to test that pickles are refused (never unpickled).
  lora_kohya.safetensors     kohya/A1111 format: lora_unet_* / lora_te_* with .alpha, on attention layers, the
                             feed-forward and resnet convolutions (LoCon, 3x3 and 1x1).
  lora_peft.safetensors      diffusers' PEFT format (save_lora_weights): unet.*.lora_A/B, text_encoder.*.
  lora_bad_key.safetensors   a kohya LoRA with a layer tiny-sd does not have.
  open_clip_sd2.safetensors  a tiny SD2-style OpenCLIP text encoder (fused in_proj); goldens/open_clip_sd2.safetensors
                             is diffusers' convert_open_clip_checkpoint of it.
And test/fixtures/goldens/lora_pipeline.{json,safetensors}: diffusers' load_lora_weights of both LoRAs,
set_adapters([kohya, peft], [0.8, 0.5]), fuse_lora(); then a 3-step DDIM run from fixed latents (image, latents per
step) and the fused weights of a few layers; plus single_file_pipeline.safetensors: the same run (no LoRA) of the
pipeline diffusers' from_single_file builds.
"""

import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = os.path.join(ROOT, "test", "fixtures", "tiny-sd")
OUT = os.path.join(ROOT, "test", "fixtures", "single-file")
GOLDENS = os.path.join(ROOT, "test", "fixtures", "goldens")
PROMPT, NEGATIVE, STEPS, SIZE, GUIDANCE = "a red apple on a table", "blurry", 3, 64, 7.5


def unet_to_ldm(sd, config):
    """diffusers UNet names -> LDM names (convert_diffusers_to_original_stable_diffusion.py, generalised to any
    layers_per_block and block count)."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    has_attn_down = ["CrossAttn" in t for t in config["down_block_types"]]
    has_attn_up = ["CrossAttn" in t for t in config["up_block_types"]]
    prefixes = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
                ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
                ("mid_block.attentions.0.", "middle_block.1.")]
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
              ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    resnet_prefixes = [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.") for j in range(2)]
    for i in range(n):
        for j in range(lpb):
            resnet_prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(lpb + 1) * i + j + 1}.0."))
            if has_attn_down[i]:
                prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(lpb + 1) * i + j + 1}.1."))
        for j in range(lpb + 1):
            resnet_prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(lpb + 1) * i + j}.0."))
            if has_attn_up[i]:
                prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(lpb + 1) * i + j}.1."))
        if i < n - 1:
            prefixes.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(lpb + 1) * (i + 1)}.0.op."))
            prefixes.append((f"up_blocks.{i}.upsamplers.0.",
                             f"output_blocks.{(lpb + 1) * i + lpb}.{2 if has_attn_up[i] else 1}."))
    out = {}
    for k, v in sd.items():
        new = None
        for hf, ldm in resnet_prefixes:
            if k.startswith(hf):
                rest = k[len(hf):]
                for a, b in resnet:
                    if rest.startswith(a + "."):
                        new = ldm + b + rest[len(a):]
        for hf, ldm in prefixes:
            if new is None and k.startswith(hf):
                new = ldm + k[len(hf):]
        assert new is not None, k
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(sd, config):
    n = len(config["block_out_channels"])
    pairs = [("conv_shortcut", "nin_shortcut"), ("conv_norm_out", "norm_out"), ("mid_block.attentions.0.", "mid.attn_1."),
             ("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    out = {}
    for k, v in sd.items():
        new = k
        for i in range(n):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")
            new = new.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
        for j in range(2):
            new = new.replace(f"mid_block.resnets.{j}.", f"mid.block_{j + 1}.")
        for a, b in pairs:
            new = new.replace(a, b)
        if ".mid.attn_1." in new and new.endswith("weight") and v.ndim == 2:
            v = v.reshape(*v.shape, 1, 1)  # the original attention projections are 1x1 convolutions
        out["first_stage_model." + new] = v
    return out


def make_single_file(pipe):
    unet_sd, vae_sd, te_sd = pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder.state_dict()
    ldm = {**unet_to_ldm(unet_sd, pipe.unet.config), **vae_to_ldm(vae_sd, pipe.vae.config)}
    # Real SD1.x files name the CLIP tensors cond_stage_model.transformer.text_model.* (transformers 5's
    # CLIPTextModel.state_dict() leaves text_model. out).
    te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te_sd.items()}
    ldm.update({"cond_stage_model.transformer." + k: v for k, v in te_sd.items()})
    # Stored in f16 (as most shared checkpoints are, and half the size): byte-identical to tiny-sd's
    # *.fp16.safetensors variants.
    ldm = {k: v.half().contiguous() for k, v in ldm.items()}
    # diffusers' own forward conversion must give every tensor back exactly.
    back_unet = convert_ldm_unet_checkpoint(ldm, pipe.unet.config)
    back_vae = convert_ldm_vae_checkpoint(ldm, pipe.vae.config)
    back_te = convert_ldm_clip_checkpoint(ldm)
    for name, sd, back in [("unet", unet_sd, back_unet), ("vae", vae_sd, back_vae), ("text_encoder", te_sd, back_te)]:
        missing = set(sd) - set(back)
        assert not missing, (name, sorted(missing)[:5], sorted(back)[:5])
        for k, v in sd.items():
            assert torch.equal(back[k].reshape(v.shape), v.half()), (name, k)
    path = os.path.join(OUT, "tiny-sd.safetensors")
    save_file(ldm, path)
    with open(os.path.join(OUT, "tiny-sd.ckpt"), "wb") as f:
        f.write(b"PK\x03\x04 not a real pickle: candlewick refuses .ckpt files by their name\n")
    return path


def make_open_clip():
    """An SD2-style OpenCLIP text encoder (cond_stage_model.model.*, fused in_proj) with random tiny weights, and
    what diffusers' convert_open_clip_checkpoint makes of it (goldens/open_clip_sd2.safetensors). The UNet is two
    placeholder tensors, enough for infer_diffusers_model_type to say "v2"."""
    from types import SimpleNamespace
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    g = torch.Generator().manual_seed(21)
    width, layers, vocab, ctx = 16, 3, 64, 77
    p = "cond_stage_model.model."
    sd = {p + "token_embedding.weight": torch.randn(vocab, width, generator=g),
          p + "positional_embedding": torch.randn(ctx, width, generator=g),
          p + "ln_final.weight": torch.randn(width, generator=g), p + "ln_final.bias": torch.randn(width, generator=g),
          p + "text_projection": torch.randn(width, width, generator=g)}
    for i in range(layers):
        b = f"{p}transformer.resblocks.{i}."
        for name, shape in [("attn.in_proj_weight", (3 * width, width)), ("attn.in_proj_bias", (3 * width,)),
                            ("attn.out_proj.weight", (width, width)), ("attn.out_proj.bias", (width,)),
                            ("ln_1.weight", (width,)), ("ln_1.bias", (width,)), ("ln_2.weight", (width,)),
                            ("ln_2.bias", (width,)), ("mlp.c_fc.weight", (4 * width, width)), ("mlp.c_fc.bias", (4 * width,)),
                            ("mlp.c_proj.weight", (width, 4 * width)), ("mlp.c_proj.bias", (width,))]:
            sd[b + name] = torch.randn(*shape, generator=g)
    converted = convert_open_clip_checkpoint(SimpleNamespace(config=SimpleNamespace(hidden_size=width)), sd)
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 1, 1)
    sd["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(4, 1024)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, "open_clip_sd2.safetensors"))
    converted.pop("text_projection.weight", None)  # CLIPTextModelWithProjection's; the SD2 text encoder has none
    save_file({k: v.contiguous() for k, v in converted.items()}, os.path.join(GOLDENS, "open_clip_sd2.safetensors"))


def random_lora(state_dict_keys, modules, rank, seed, conv_shapes):
    """kohya pairs for `modules` ({kohya_name: (out, in, kernel)})."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (o, i, k) in modules.items():
        if k == 0:
            down, up = torch.randn(rank, i, generator=g) * 0.3, torch.randn(o, rank, generator=g) * 0.3
        else:
            down, up = torch.randn(rank, i, k, k, generator=g) * 0.3, torch.randn(o, rank, 1, 1, generator=g) * 0.3
        out[f"{name}.lora_down.weight"], out[f"{name}.lora_up.weight"] = down, up
        out[f"{name}.alpha"] = torch.tensor(float(rank) / 2)
    return out


def make_loras(pipe):
    unet, te = pipe.unet.state_dict(), pipe.text_encoder.state_dict()
    modules = {}
    for prefix, sd, targets in [
        ("lora_unet_", unet, ["attn1.to_q", "attn1.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.2", "proj_in",
                              "resnets.0.conv1", "resnets.1.conv2", "time_emb_proj", "conv_shortcut"]),
        ("lora_te_", te, ["self_attn.q_proj", "self_attn.out_proj", "mlp.fc1"]),
    ]:
        for k, v in sd.items():
            if k.endswith(".weight") and any(k[:-len(".weight")].endswith(t) for t in targets):
                if prefix == "lora_te_" and not k.startswith("text_model."):
                    k = "text_model." + k  # kohya names the CLIP layers lora_te_text_model_encoder_layers_...
                w = v.shape
                modules[prefix + k[:-len(".weight")].replace(".", "_")] = (w[0], w[1], w[2] if v.ndim == 4 else 0)
    kohya = random_lora(None, modules, rank=4, seed=11, conv_shapes=None)
    save_file(kohya, os.path.join(OUT, "lora_kohya.safetensors"))
    bad = random_lora(None, {"lora_unet_down_blocks_5_attentions_0_proj_in": (32, 32, 0)}, rank=2, seed=12, conv_shapes=None)
    save_file(bad, os.path.join(OUT, "lora_bad_key.safetensors"))

    # PEFT format through diffusers' own saving: random A and B on a copy of the pipeline.
    from peft import LoraConfig
    p2 = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None)
    torch.manual_seed(13)
    # lora_alpha != r: the scale comes from the adapter metadata diffusers writes into the file.
    p2.unet.add_adapter(LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                                   target_modules=["to_k", "to_out.0", "proj_out", "conv2"]))
    p2.text_encoder.add_adapter(LoraConfig(r=2, lora_alpha=1, init_lora_weights=False,
                                           target_modules=["k_proj", "fc2"]))
    from peft.utils import get_peft_model_state_dict
    StableDiffusionPipeline.save_lora_weights(
        OUT, unet_lora_layers=get_peft_model_state_dict(p2.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(p2.text_encoder),
        weight_name="lora_peft.safetensors", safe_serialization=True,
        unet_lora_adapter_metadata=relative(sorted_sets(p2.unet.peft_config["default"].to_dict())),
        text_encoder_lora_adapter_metadata=relative(sorted_sets(p2.text_encoder.peft_config["default"].to_dict())))


def relative(config):
    """PEFT records the base model's path: the fixture's, not this machine's."""
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = "test/fixtures/tiny-sd/text_encoder"
    return config


def sorted_sets(config):
    """PEFT's target_modules is a set: sorted, so that the file is the same on every run."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def run(pipe, name, extra, guidance=GUIDANCE, about="scripts/fixture_single_file_lora.py", record=None, **call):
    """One STEPS-step call of PROMPT from seed 31's latents, every step's latents captured: writes
    goldens/<name>.{safetensors,json} (`extra` tensors and `record` fields added). fixture_sdxl_lora.py uses it too."""
    g = torch.Generator().manual_seed(31)
    latents = torch.randn(1, 4, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor, generator=g)
    captured = {}

    def on_step_end(p, i, t, kwargs):
        captured[f"latents_step_{i}"] = kwargs["latents"].clone()
        return {}

    image = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=guidance,
                 width=SIZE, height=SIZE, latents=latents.clone(), output_type="pt",
                 callback_on_step_end=on_step_end, **call).images
    image_u8 = torch.from_numpy((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    save_file({"initial_latents": latents, **captured, "image": image.contiguous(), "image_u8": image_u8.contiguous(), **extra},
              os.path.join(GOLDENS, f"{name}.safetensors"))
    with open(os.path.join(GOLDENS, f"{name}.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS, "guidance_scale": guidance,
                   "width": SIZE, "height": SIZE, **(record or {}), "about": about}, f, indent=1)


def main():
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(TINY, safety_checker=None)
    path = make_single_file(pipe)

    single = StableDiffusionPipeline.from_single_file(path, config=TINY, local_files_only=True, safety_checker=None)
    for part in ["unet", "vae", "text_encoder"]:
        a, b = getattr(pipe, part).state_dict(), getattr(single, part).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k].half().float(), b[k]) for k in a), part
    run(single, "single_file_pipeline", {}, eta=0.0)

    make_open_clip()
    make_loras(pipe)
    base = {part: {k: v.clone() for k, v in getattr(pipe, part).state_dict().items()} for part in ["unet", "text_encoder"]}
    pipe.load_lora_weights(OUT, weight_name="lora_kohya.safetensors", adapter_name="kohya")
    pipe.load_lora_weights(OUT, weight_name="lora_peft.safetensors", adapter_name="peft")
    pipe.set_adapters(["kohya", "peft"], adapter_weights=[0.8, 0.5])
    pipe.fuse_lora(adapter_names=["kohya", "peft"])
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    fused = {}
    for part, model in [("unet", pipe.unet), ("text_encoder", pipe.text_encoder)]:
        sd = model.state_dict()
        for k in ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                  "down_blocks.0.attentions.0.proj_in.weight", "down_blocks.0.resnets.0.conv1.weight",
                  "mid_block.attentions.0.proj_out.weight", "up_blocks.1.resnets.0.conv_shortcut.weight",
                  "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.mlp.fc2.weight"]:
            k = k if k in sd else k.removeprefix("text_model.")
            if k in sd:
                assert not torch.equal(sd[k], base[part][k]), f"the LoRAs did not change {part}.{k}"
                fused[f"{part}.{k}"] = sd[k].contiguous()
    run(pipe, "lora_pipeline", fused, eta=0.0)
    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)
    print("fused golden layers:", sorted(fused))
    print("wrote", OUT, "and goldens lora_pipeline / single_file_pipeline")


if __name__ == "__main__":
    main()
