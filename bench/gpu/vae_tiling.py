"""diffusers' side of the VAE tiling table (issue 17): AutoencoderKL.decode, whole and with
enable_tiling() (and enable_slicing() with --batch > 1), time and peak memory; the candle side is
crates/candlewick-core/examples/vae_decode_bench.rs, which prints the same JSON rows.

    python3 bench/gpu/vae_tiling.py MODEL_DIR [--sizes 2048,4096] [--device cuda|cpu] [--dtype f16|f32]
                                    [--runs 3] [--batch 1] [--modes full,tiled]

Loads MODEL_DIR/vae (the fp16 variant for f16 when present), decodes seeded standard-normal latents
divided by scaling_factor (as the pipeline hands them over) of each image size / 8, and prints one JSON
line per size and mode: median seconds of --runs synchronized decodes after one warm-up, and
torch.cuda.max_memory_allocated over them (reset first; the weights included). A decode that runs out of
memory is a row with "oom": true.
"""
import argparse
import json
import os
import time

import torch
from diffusers import AutoencoderKL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--sizes", default="2048,4096")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="f16 on cuda, f32 on cpu by default")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cuda = a.device == "cuda"
    dtype_name = a.dtype or ("f16" if cuda else "f32")
    dtype = {"f16": torch.float16, "f32": torch.float32}[dtype_name]
    modes = (a.modes or ("full,tiled" + (",sliced,tiled+sliced" if a.batch > 1 else ""))).split(",")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    vae_dir = os.path.join(a.model_dir, "vae")
    fp16 = dtype == torch.float16 and os.path.exists(os.path.join(vae_dir, "diffusion_pytorch_model.fp16.safetensors"))
    vae = AutoencoderKL.from_pretrained(vae_dir, variant="fp16" if fp16 else None, torch_dtype=dtype).to(a.device)
    vae.eval()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    g = torch.Generator().manual_seed(a.seed)
    for size in [int(s) for s in a.sizes.split(",")]:
        h = w = size // scale
        latents = (torch.randn(a.batch, vae.config.latent_channels, h, w, generator=g)
                   / vae.config.scaling_factor).to(a.device, dtype)
        for mode in modes:
            if "tiled" in mode:
                vae.enable_tiling()
            else:
                vae.disable_tiling()
            if "sliced" in mode:
                vae.enable_slicing()
            else:
                vae.disable_slicing()
            sync()
            baseline = torch.cuda.memory_allocated() if cuda else None
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds, error, oom, shape = [], None, False, None
            for _ in range(a.runs + 1):
                started = time.perf_counter()
                try:
                    with torch.no_grad():
                        image = vae.decode(latents).sample
                    sync()
                except torch.OutOfMemoryError as e:
                    error, oom = str(e).splitlines()[0], True
                    break
                except RuntimeError as e:
                    error = str(e).splitlines()[0]
                    oom = "out of memory" in str(e).lower()
                    break
                seconds.append(time.perf_counter() - started)
                shape = list(image.shape)
                del image
            image = None
            peak = torch.cuda.max_memory_allocated() if cuda else None
            reserved = torch.cuda.memory_reserved() if cuda else None
            if cuda:
                torch.cuda.empty_cache()
            timed = sorted(seconds[1:])
            print(json.dumps({
                "impl": "diffusers", "torch": torch.__version__,
                "device": a.device, "dtype": dtype_name, "width": w * scale, "height": h * scale, "batch": a.batch,
                "latents": [a.batch, vae.config.latent_channels, h, w], "mode": mode,
                "tiling": "tiled" in mode, "slicing": "sliced" in mode,
                "tile": [vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor],
                "seconds_median": timed[len(timed) // 2] if timed else None, "seconds_runs": seconds[1:],
                "seconds_warm_up": seconds[0] if seconds else None,
                "baseline_bytes": baseline, "peak_bytes": peak,
                "peak_over_baseline_bytes": None if peak is None else peak - baseline,
                "reserved_bytes": reserved, "output_shape": shape, "oom": oom, "error": error,
            }), flush=True)


if __name__ == "__main__":
    main()
