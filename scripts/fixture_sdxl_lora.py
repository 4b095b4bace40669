"""An SDXL LoRA in kohya's format and diffusers' fused run of it, on the committed tiny SDXL (test/fixtures/tiny-sdxl).

Run: /work/main/.venv/bin/python scripts/fixture_sdxl_lora.py   (diffusers 0.42.1, peft; CPU; after fixture_families.py)

Writes test/fixtures/single-file/lora_sdxl_kohya.safetensors: kohya's SDXL format, as real SDXL LoRAs are shared:
lora_te1_* (text_encoder: CLIPTextModel), lora_te2_* (text_encoder_2: CLIPTextModelWithProjection) and lora_unet_* in
the original (SGM) block numbering (input_blocks_4_1_..., middle_block_1_..., output_blocks_0_1_...), each with .alpha.
And test/fixtures/goldens/sdxl_lora_pipeline.{json,safetensors}: StableDiffusionXLPipeline.load_lora_weights of it,
fuse_lora(lora_scale=0.8), then a 3-step run of the folder's scheduler from fixed latents (image, latents per step),
and the fused weights of a few layers of each model (unet.*, text_encoder.*, text_encoder_2.*).
Also single-file/lora_sdxl_peft.safetensors: diffusers' PEFT format from StableDiffusionXLPipeline.save_lora_weights
(unet.*, text_encoder.*, text_encoder_2.*; lora_alpha != r, so the scale comes from the adapter metadata in the file)
and goldens/sdxl_lora_peft.safetensors: every weight it changes after load_lora_weights + fuse_lora(lora_scale=0.5).
"""

import os

import torch
from safetensors.torch import save_file

from diffusers import StableDiffusionXLPipeline

from fixture_single_file_lora import random_lora, run
from fixture_single_file_sdxl import sdxl_unet_to_ldm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "test", "fixtures")
TINY = os.path.join(FIXTURES, "tiny-sdxl")
OUT = os.path.join(FIXTURES, "single-file")
GOLDENS = os.path.join(FIXTURES, "goldens")
PROMPT, NEGATIVE, STEPS, SIZE, GUIDANCE, SCALE = "a red apple on a table", "blurry", 3, 64, 5.0, 0.8
UNET_TARGETS = ["attn1.to_q", "attn1.to_out.0", "attn2.to_k", "ff.net.2", "proj_in", "proj_out"]
# One kind of layer per text encoder: diffusers 0.42.1 converts kohya's self_attn layers to its old names
# (to_q_lora) and the mlp ones to its new (lora_linear_layer); with both in one encoder it reads the state dict as the
# new format and drops the self_attn layers without a word.
TE1_TARGETS = ["mlp.fc1", "mlp.fc2"]
TE2_TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.out_proj"]
FUSED = ["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
         "unet.mid_block.attentions.0.proj_in.weight",
         "unet.up_blocks.0.attentions.1.transformer_blocks.1.ff.net.2.weight",
         "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight",
         "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.weight",
         "text_encoder_2.text_model.encoder.layers.4.self_attn.out_proj.weight"]


def modules(sd, targets, prefix):
    """{kohya name: (out, in, 0)} for the linear layers of `sd` whose names end with a target."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and any(k[:-len(".weight")].endswith(t) for t in targets):
            out[k] = v
    return out


def kohya_names(weights, prefix, rename=lambda sd: sd):
    return {prefix + k[:-len(".weight")].replace(".", "_"): (v.shape[0], v.shape[1], 0) for k, v in rename(weights).items()}


def make_lora(pipe):
    te1 = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in pipe.text_encoder.state_dict().items()}
    te2 = {k if k.startswith("text_model.") else "text_model." + k: v
           for k, v in pipe.text_encoder_2.state_dict().items()}
    unet = modules(pipe.unet.state_dict(), UNET_TARGETS, None)

    def sgm(sd):  # diffusers' UNet names -> the original (SGM) numbering kohya's SDXL LoRAs use
        return {k.removeprefix("model.diffusion_model."): v for k, v in sdxl_unet_to_ldm(
            {**sd, **{f"add_embedding.linear_{i}.{p}": torch.zeros(1) for i in (1, 2) for p in ("weight", "bias")}},
            pipe.unet.config).items() if not k.startswith("model.diffusion_model.label_emb.")}

    names = {**kohya_names(modules(te1, TE1_TARGETS, None), "lora_te1_"),
             **kohya_names(modules(te2, TE2_TARGETS, None), "lora_te2_"),
             **kohya_names(unet, "lora_unet_", sgm)}
    assert any(n.startswith("lora_unet_input_blocks_") for n in names) and any("middle_block" in n for n in names)
    lora = random_lora(None, dict(sorted(names.items())), rank=4, seed=41, conv_shapes=None)
    save_file(lora, os.path.join(OUT, "lora_sdxl_kohya.safetensors"))
    print(f"lora_sdxl_kohya: {len(names)} layers ({sum(n.startswith('lora_te2_') for n in names)} in text_encoder_2)")


def make_peft():
    """diffusers' PEFT format through its own saving: random A and B on a copy of the pipeline; then its fused weights."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from fixture_single_file_lora import sorted_sets
    pipe = StableDiffusionXLPipeline.from_pretrained(TINY)
    torch.manual_seed(43)
    configs = {"unet": LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["to_v", "proj_out"]),
               "text_encoder": LoraConfig(r=2, lora_alpha=1, init_lora_weights=False, target_modules=["v_proj"]),
               "text_encoder_2": LoraConfig(r=4, lora_alpha=2, init_lora_weights=False, target_modules=["q_proj", "fc1"])}
    layers, metadata = {}, {}
    for part, config in configs.items():
        model = getattr(pipe, part)
        model.add_adapter(config)
        layers[f"{part}_lora_layers"] = get_peft_model_state_dict(model)
        config = sorted_sets(model.peft_config["default"].to_dict())
        config["base_model_name_or_path"] = "test/fixtures/tiny-sdxl"  # not this machine's path
        metadata[f"{part}_lora_adapter_metadata"] = config
    StableDiffusionXLPipeline.save_lora_weights(OUT, weight_name="lora_sdxl_peft.safetensors", safe_serialization=True,
                                                **layers, **metadata)
    pipe = StableDiffusionXLPipeline.from_pretrained(TINY)
    models = {part: getattr(pipe, part) for part in configs}
    base = {part: {k: v.clone() for k, v in m.state_dict().items()} for part, m in models.items()}
    pipe.load_lora_weights(OUT, weight_name="lora_sdxl_peft.safetensors", adapter_name="peft")
    pipe.fuse_lora(lora_scale=0.5)
    pipe.unload_lora_weights()
    fused = {}
    for part, model in models.items():
        for k, v in model.state_dict().items():
            if not torch.equal(v, base[part][k]):
                fused[f"{part}.{k}"] = v.contiguous()
    counts = {part: sum(k.startswith(part + ".") for k in fused) for part in configs}
    assert all(counts.values()), counts
    save_file(fused, os.path.join(GOLDENS, "sdxl_lora_peft.safetensors"))
    for path in [os.path.join(OUT, "lora_sdxl_peft.safetensors"), os.path.join(GOLDENS, "sdxl_lora_peft.safetensors")]:
        os.chmod(path, 0o644)
    print("lora_sdxl_peft: fused layers per model", counts)


def main():
    torch.use_deterministic_algorithms(True)
    make_peft()
    pipe = StableDiffusionXLPipeline.from_pretrained(TINY)
    make_lora(pipe)
    models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    base = {part: {k: v.clone() for k, v in m.state_dict().items()} for part, m in models.items()}
    pipe.load_lora_weights(OUT, weight_name="lora_sdxl_kohya.safetensors", adapter_name="kohya")
    pipe.fuse_lora(lora_scale=SCALE)
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    fused = {}
    for key in FUSED:
        part, name = key.split(".", 1)
        sd = models[part].state_dict()
        name = name if name in sd else name.removeprefix("text_model.")
        assert not torch.equal(sd[name], base[part][name]), f"the LoRA did not change {key}"
        fused[key] = sd[name].contiguous()
    # Every layer of each text encoder the LoRA names changed, and no other.
    for part, targets in [("unet", UNET_TARGETS), ("text_encoder", TE1_TARGETS), ("text_encoder_2", TE2_TARGETS)]:
        sd = models[part].state_dict()
        changed = {k for k in sd if not torch.equal(sd[k], base[part][k])}
        named = {k for k in sd if k.endswith(".weight") and sd[k].ndim == 2 and any(k.removesuffix(".weight").endswith(t) for t in targets)}
        assert changed == named, (part, sorted(changed ^ named)[:4])

    run(pipe, "sdxl_lora_pipeline", fused, guidance=GUIDANCE, about="scripts/fixture_sdxl_lora.py",
        record={"lora_scale": SCALE, "scheduler_class": type(pipe.scheduler).__name__})
    for path in [os.path.join(OUT, "lora_sdxl_kohya.safetensors"), os.path.join(GOLDENS, "sdxl_lora_pipeline.safetensors")]:
        os.chmod(path, 0o644)
    print("fused golden layers:", sorted(fused))


if __name__ == "__main__":
    main()
