"""A random kohya/A1111-format LoRA for a model folder, for the LoRA speed row (bench/gpu/lora-row.sh).

    python3 bench/gpu/make_lora.py MODEL_DIR OUT.safetensors [RANK]

Every linear layer of the UNet's transformers (attention projections, feed-forward, proj_in/proj_out
where they are linear) and of the text encoder's layers gets a `lora_down` [rank, in], `lora_up`
[out, rank] and `alpha` (= rank), named as kohya's trainer names them (`lora_unet_<module with _>`,
`lora_te_<module with _>`), f16, small random values: what a user's style LoRA covers.
"""
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

model_dir, out = sys.argv[1], sys.argv[2]
rank = int(sys.argv[3]) if len(sys.argv) > 3 else 16
gen = torch.Generator().manual_seed(0)
LINEAR = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight", ".ff.net.0.proj.weight",
          ".ff.net.2.weight", ".proj_in.weight", ".proj_out.weight", "self_attn.q_proj.weight",
          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.out_proj.weight", "mlp.fc1.weight",
          "mlp.fc2.weight")
tensors = {}
for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
    path = os.path.join(model_dir, component, ("diffusion_pytorch_model" if component == "unet" else "model") + ".safetensors")
    with safe_open(path, "pt") as f:
        for key in f.keys():
            if not key.endswith(LINEAR):
                continue
            shape = f.get_slice(key).get_shape()
            if len(shape) != 2:  # SD1.5's proj_in/proj_out are 1x1 convolutions
                continue
            module = key[: -len(".weight")].removeprefix("text_model.")
            name = prefix + ("text_model_" if component == "text_encoder" else "") + module.replace(".", "_")
            out_f, in_f = shape
            tensors[name + ".lora_down.weight"] = (torch.randn(rank, in_f, generator=gen) * 0.02).half()
            tensors[name + ".lora_up.weight"] = (torch.randn(out_f, rank, generator=gen) * 0.02).half()
            tensors[name + ".alpha"] = torch.tensor(float(rank)).half()
save_file(tensors, out)
print(f"{len(tensors) // 3} layers, rank {rank}: {out} ({os.path.getsize(out) / 2**20:.1f} MiB)")
