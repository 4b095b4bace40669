"""Model configs (the tiny test model and SD1.5's real shapes) and the weight perturbation that makes sure
no tensor keeps its default value (so a wrongly mapped norm or bias shows up in the goldens)."""

import os

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

# SD1.5's scheduler/scheduler_config.json values that differ from DDIMScheduler's defaults.
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
)

# Tiny components: same block types and defaults as SD1.5, small widths.
TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
TINY_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=(2, 4),  # diffusers' quirk: a per-block list that means the number of heads
    norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    layers_per_block=1,  # SD1.5 has 2; 1 keeps the fixture small and still tests the decoder's layers_per_block + 1
    norm_num_groups=32,
    sample_size=64,
)

# SD1.5's real configs (runwayml/stable-diffusion-v1-5 text_encoder, unet, vae config.json), for --full-size.
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    layer_norm_eps=1e-5,
    initializer_factor=1.0,
    initializer_range=0.02,
    attention_dropout=0.0,
    dropout=0.0,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SD15_UNET = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SD15_VAE = dict(
    act_fn="silu",
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    up_block_types=("UpDecoderBlock2D",) * 4,
)


# SD 2.1's (stabilityai/stable-diffusion-2-1: 768x768, v-prediction) where they differ from SD1.5's: the
# OpenCLIP ViT-H text encoder as diffusers loads it (23 of its 24 layers: the penultimate rule), linear
# projections, 64-wide heads, upcast attention; for bench/gpu/reference.py FAMILY=sd2.
SD21_TEXT = dict(SD15_TEXT, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                 hidden_act="gelu", projection_dim=512)
SD21_UNET = dict(SD15_UNET, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
                 upcast_attention=True, sample_size=96)
SD21_VAE = dict(SD15_VAE, sample_size=768)
SD21_SCHEDULER = dict(SD15_SCHEDULER, prediction_type="v_prediction")

# SDXL base 1.0's (stabilityai/stable-diffusion-xl-base-1.0) where they differ from SD1.5's: CLIP ViT-L as
# text_encoder, OpenCLIP ViT-bigG (CLIPTextModelWithProjection) as text_encoder_2, three UNet levels with
# 1/2/10 transformer layers, 64-wide heads, the text_time add embedding, the VAE's 0.13025 scaling and
# force_upcast, Euler; for bench/gpu/reference.py FAMILY=sdxl.
SDXL_TEXT = SD15_TEXT
SDXL_TEXT_2 = dict(SD15_TEXT, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   hidden_act="gelu", projection_dim=1280)
SDXL_UNET = dict(SD15_UNET, attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280),
                 cross_attention_dim=2048, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, sample_size=128)
SDXL_VAE = dict(SD15_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon")


@torch.no_grad()
def perturb(module, generator, scale=0.1):
    """Moves every parameter off its initial value: ones-like tensors (norm weights) become 1 + scale*N(0,1),
    zero tensors (biases) become scale*N(0,1)*0.2, everything else gets scale*std*N(0,1) added."""
    for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        if torch.all(p == 1):
            p.copy_(1 + scale * noise)
        elif torch.all(p == 0):
            p.copy_(0.2 * scale * noise)
        else:
            p.add_(scale * p.std() * noise)


def build(text_cfg, unet_cfg, vae_cfg, seed, scheduler_cfg=SD15_SCHEDULER):
    """Builds (text_encoder, unet, vae, scheduler) with seeded init and perturbed weights, eval mode, f32."""
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**vae_cfg)
    g = torch.Generator().manual_seed(seed + 3)
    for m in (text_encoder, unet, vae):
        perturb(m, g)
        m.eval()
        m.to(torch.float32)
    scheduler = DDIMScheduler(**scheduler_cfg)
    return text_encoder, unet, vae, scheduler


def add_text_model_prefix(folder):
    """transformers 5 saves CLIPTextModel without the `text_model.` key prefix that SD1.5's (and every
    transformers 4) text_encoder/model.safetensors has; transformers 5 loads both. Restore SD1.5's layout."""
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            path = os.path.join(folder, f)
            with safe_open(path, "pt") as h:
                metadata = h.metadata()
            tensors = load_file(path)
            save_file({k if k.startswith("text_model.") else "text_model." + k: v for k, v in tensors.items()},
                      path, metadata=metadata)
