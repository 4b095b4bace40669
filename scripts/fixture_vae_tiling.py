"""Goldens for the VAE's tiled and sliced decode: diffusers' AutoencoderKL.enable_tiling() / enable_slicing() on
test/fixtures/tiny-sd's VAE (CPU, float32), with tiles small enough that 20x20 latents need nine of them.

Run from the repository root (make_fixtures.py --vae-tiling-only calls `make`). Writes
test/fixtures/goldens/vae_tiling.{json,safetensors}:
  tiled_in [1,4,20,20] -> tiled_out: vae.decode with tiling (tile_latent_min_size 8, tile_sample_min_size 16)
  sliced_in [2,4,12,12] -> sliced_out: the same with slicing too (each image decoded alone, then in tiles)
"""

import json
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

TILE_LATENT = 8
TILE_SAMPLE = 16


@torch.no_grad()
def make(tiny, goldens):
    vae = AutoencoderKL.from_pretrained(os.path.join(tiny, "vae")).eval()
    vae.enable_tiling()
    vae.tile_latent_min_size = TILE_LATENT
    vae.tile_sample_min_size = TILE_SAMPLE
    g = torch.Generator().manual_seed(50)
    tiled_in = torch.randn(1, 4, 20, 20, generator=g)
    tiled_out = vae.decode(tiled_in).sample
    vae.enable_slicing()
    sliced_in = torch.randn(2, 4, 12, 12, generator=g)
    sliced_out = vae.decode(sliced_in).sample
    save_file({"tiled_in": tiled_in, "tiled_out": tiled_out.contiguous(), "sliced_in": sliced_in,
               "sliced_out": sliced_out.contiguous()}, os.path.join(goldens, "vae_tiling.safetensors"))
    with open(os.path.join(goldens, "vae_tiling.json"), "w", encoding="utf-8") as f:
        json.dump({"tile_latent_min_size": TILE_LATENT, "tile_sample_min_size": TILE_SAMPLE, "tile_overlap_factor":
                   vae.tile_overlap_factor, "about": "AutoencoderKL.decode(z) with enable_tiling() (and enable_slicing() "
                   "for sliced_*), tile sizes set as given; z already divided by scaling_factor"}, f, indent=1)
        f.write("\n")
    print(f"vae_tiling: tiled_out {tuple(tiled_out.shape)}, sliced_out {tuple(sliced_out.shape)}")
