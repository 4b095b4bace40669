"""diffusers' side of bench/gpu/memory.mjs: torch.cuda.memory_allocated after load, the peak of a
call that stops at the latents (output_type="latent"), the peak of a whole call, fp16, SDPA.

    python3 bench/gpu/memory.py MODEL OUT.json   (SIZE, STEPS, GUIDANCE, BATCH as memory.mjs)
"""
import json
import os
import sys

import torch
from diffusers import DiffusionPipeline

model, out = sys.argv[1:3]
SIZE, STEPS = int(os.environ.get("SIZE", 1024)), int(os.environ.get("STEPS", 4))
GUIDANCE, BATCH = float(os.environ.get("GUIDANCE", 5)), int(os.environ.get("BATCH", 1))
GiB = 2**30
pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16).to("cuda")
pipe.set_progress_bar_config(disable=True)
loaded = torch.cuda.memory_allocated() / GiB


def run(output_type):
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        pipe(prompt=["a photo of an astronaut riding a horse on mars"] * BATCH, num_inference_steps=STEPS,
             guidance_scale=GUIDANCE, width=SIZE, height=SIZE, output_type=output_type,
             generator=torch.Generator("cuda").manual_seed(1))
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GiB


run("np")
row = dict(system="diffusers", size=SIZE, batch=BATCH, after_load_gib=loaded, denoise_peak_gib=run("latent"),
           call_peak_gib=run("np"), after_call_gib=torch.cuda.memory_allocated() / GiB,
           reserved_gib=torch.cuda.memory_reserved() / GiB, torch=torch.__version__)
print(json.dumps(row))
with open(out, "w") as f:
    json.dump(row, f, indent=1)
