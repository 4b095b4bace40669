"""SDXL single-file checkpoint fixtures from the committed tiny SDXL folders (test/fixtures/tiny-sdxl, tiny-sdxl-refiner).

Run: /work/main/.venv/bin/python scripts/fixture_single_file_sdxl.py   (diffusers 0.42.1; CPU; after fixture_families.py)

Writes test/fixtures/single-file/:
  tiny-sdxl.safetensors          tiny-sdxl's (f32) UNet, VAE and both text encoders in the original SDXL layout
                                 (sgm's): model.diffusion_model.* (label_emb.0.0/0.2 for add_embedding),
                                 first_stage_model.*, conditioner.embedders.0.transformer.text_model.* (CLIP) and
                                 conditioner.embedders.1.model.* (OpenCLIP: fused in_proj, text_projection stored
                                 as x @ P, i.e. the linear layer's weight transposed).
  tiny-sdxl-refiner.safetensors  tiny-sdxl-refiner's: the same, its only text encoder at conditioner.embedders.0.model.*

Written by the inverse of diffusers' convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint /
convert_ldm_clip_checkpoint / convert_open_clip_checkpoint and checked here against diffusers itself: its forward
conversions give every tensor back bit for bit, and StableDiffusionXLPipeline.from_single_file(file, config=tiny-sdxl)
/ StableDiffusionXLImg2ImgPipeline.from_single_file(file, config=tiny-sdxl-refiner) load the folder's tensors.

One exception, a diffusers quirk of the tiny shapes: from_single_file picks the converter for a CLIP model by its
width (the CLIP layout when conditioner.embedders.0's position embedding is as wide as the model), which tells SDXL's
768-wide CLIP from its 1280-wide OpenCLIP in real files; tiny-sdxl's two text encoders are both 32 wide, so diffusers
would fill text_encoder_2 from the CLIP tensors. text_encoder_2 of the base file is therefore checked through
convert_open_clip_checkpoint(prefix="conditioner.embedders.1.model."), the function from_single_file calls for it on
real SDXL files, and passed to from_single_file as a loaded component.
"""

import os

import torch
from safetensors.torch import save_file

from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)

from fixture_single_file_lora import unet_to_ldm, vae_to_ldm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
OUT = os.path.join(FIXTURES, "single-file")
CLIP_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_BASE = "conditioner.embedders.1.model."
OPEN_CLIP_REFINER = "conditioner.embedders.0.model."


def sdxl_unet_to_ldm(sd, config):
    """SD1.x's UNet map (fixture_single_file_lora.unet_to_ldm) plus SDXL's added conditions."""
    sd = dict(sd)
    out = {}
    for diffusers, ldm in [("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2.")]:
        for param in ["weight", "bias"]:
            out["model.diffusion_model." + ldm + param] = sd.pop(diffusers + param)
    return {**unet_to_ldm(sd, config), **out}


def clip_to_ldm(sd, prefix):
    """CLIPTextModel -> prefix + text_model.* (the layout of conditioner.embedders.0.transformer in SDXL files)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def open_clip_to_ldm(sd, prefix):
    """CLIPTextModelWithProjection -> OpenCLIP (the inverse of diffusers' convert_open_clip_checkpoint)."""
    direct = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
              "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
              "text_model.final_layer_norm.weight": "ln_final.weight",
              "text_model.final_layer_norm.bias": "ln_final.bias"}
    layer = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
             ("self_attn.out_proj", "attn.out_proj")]
    out, fused = {}, {}
    for k, v in sd.items():
        if k in direct:
            out[prefix + direct[k]] = v
        elif k == "text_projection.weight":
            out[prefix + "text_projection"] = v.T.contiguous()
        elif k.startswith("text_model.encoder.layers."):
            i, rest = k[len("text_model.encoder.layers."):].split(".", 1)
            block = f"{prefix}transformer.resblocks.{i}."
            module, param = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{block}attn.in_proj_{param}", {})[module[-6]] = v
                continue
            new = dict(layer).get(module)
            assert new is not None, k
            out[f"{block}{new}.{param}"] = v
        else:
            raise AssertionError(f"unmapped text_encoder_2 tensor {k}")
    for key, qkv in fused.items():
        out[key] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], 0)
    return out


def assert_same(name, want, got):
    missing = set(want) - set(got)
    assert not missing, (name, sorted(missing)[:5])
    for k, v in want.items():
        assert torch.equal(got[k].reshape(v.shape), v), (name, k)


def make(refiner):
    folder = os.path.join(FIXTURES, "tiny-sdxl-refiner" if refiner else "tiny-sdxl")
    cls = StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline
    pipe = cls.from_pretrained(folder)
    unet_sd, vae_sd, te2_sd = pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder_2.state_dict()
    open_clip_prefix = OPEN_CLIP_REFINER if refiner else OPEN_CLIP_BASE
    ldm = {**sdxl_unet_to_ldm(unet_sd, pipe.unet.config), **vae_to_ldm(vae_sd, pipe.vae.config),
           **open_clip_to_ldm(te2_sd, open_clip_prefix)}
    te_sd = None
    if not refiner:
        te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in pipe.text_encoder.state_dict().items()}
        ldm.update(clip_to_ldm(te_sd, CLIP_PREFIX))
    ldm = {k: v.contiguous() for k, v in ldm.items()}

    # diffusers' own forward conversions give every tensor back exactly.
    assert_same("unet", unet_sd, convert_ldm_unet_checkpoint(ldm, pipe.unet.config))
    assert_same("vae", vae_sd, convert_ldm_vae_checkpoint(ldm, pipe.vae.config))
    assert_same("text_encoder_2", te2_sd, convert_open_clip_checkpoint(pipe.text_encoder_2, ldm, prefix=open_clip_prefix))
    if te_sd is not None:
        assert_same("text_encoder", te_sd, convert_ldm_clip_checkpoint(ldm))

    name = "tiny-sdxl-refiner.safetensors" if refiner else "tiny-sdxl.safetensors"
    path = os.path.join(OUT, name)
    save_file(ldm, path)
    assert os.path.getsize(path) < 1_500_000, (path, os.path.getsize(path))

    # And from_single_file(config=folder) builds the folder's pipeline (text_encoder_2 of the base: see above).
    extra = {} if refiner else {"text_encoder_2": pipe.text_encoder_2}
    single = cls.from_single_file(path, config=folder, local_files_only=True, **extra)
    parts = ["unet", "vae", "text_encoder_2"] + ([] if refiner else ["text_encoder"])
    for part in parts:
        a, b = getattr(pipe, part).state_dict(), getattr(single, part).state_dict()
        assert set(a) == set(b), (name, part, sorted(set(a) ^ set(b))[:5])
        assert all(torch.equal(a[k], b[k]) for k in a), (name, part)
    if refiner:
        assert single.text_encoder is None and single.tokenizer is None
        assert single.config.requires_aesthetics_score == pipe.config.requires_aesthetics_score
    assert single.config.force_zeros_for_empty_prompt == pipe.config.force_zeros_for_empty_prompt
    os.chmod(path, 0o644)
    print("wrote", path, os.path.getsize(path), "bytes,", len(ldm), "tensors")


def main():
    os.makedirs(OUT, exist_ok=True)
    make(refiner=False)
    make(refiner=True)


if __name__ == "__main__":
    main()
