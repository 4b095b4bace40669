"""What channels-last (NHWC) would buy SD1.5's convolutions on this card, measured with PyTorch's
cuDNN convolutions (bench/gpu/run.sh, PART=p), before we move our UNet to NHWC.

    python3 bench/gpu/conv_layouts.py OUT.json

Records every Conv2d call of one SD1.5 UNet forward at batch 2 (512x512, as with guidance), then
times each distinct convolution in f16 with NCHW and with channels-last tensors (cudnn.benchmark off:
cuDNN's heuristics, as candlewick's default), and the kernels cuDNN launches for one of them.
"""
import collections
import json
import os
import sys

import torch
from diffusers import UNet2DConditionModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import fixture_models  # noqa: E402


def timed(fn, reps=50):
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


@torch.no_grad()
def main(out):
    torch.backends.cudnn.benchmark = False
    unet = UNet2DConditionModel(**fixture_models.SD15_UNET).to("cuda", torch.float16).eval()
    calls = collections.Counter()
    convs = {}

    def hook(module, args, _):
        x = args[0]
        key = (tuple(x.shape), module.out_channels, module.kernel_size, module.stride, module.padding)
        calls[key] += 1
        convs[key] = module

    handles = [m.register_forward_hook(hook) for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    sample = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.float16)
    text = torch.randn(2, 77, 768, device="cuda", dtype=torch.float16)
    t = torch.tensor([500, 500], device="cuda")
    unet(sample, t, text)
    for h in handles:
        h.remove()

    rows, totals = [], {"nchw": 0.0, "nhwc": 0.0}
    for key, count in calls.items():
        module = convs[key]
        x = torch.randn(key[0], device="cuda", dtype=torch.float16)
        ms = {}
        for layout in ("nchw", "nhwc"):
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            m = torch.nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                module.padding).to("cuda", torch.float16).to(memory_format=fmt)
            xi = x.contiguous(memory_format=fmt)
            ms[layout] = timed(lambda: m(xi))
            totals[layout] += ms[layout] * count
        rows.append({"input": key[0], "out_channels": key[1], "kernel": key[2], "stride": key[3], "calls": count,
                     "nchw_ms": round(ms["nchw"], 4), "nhwc_ms": round(ms["nhwc"], 4)})

    unet_ms = {}
    for layout in ("nchw", "nhwc"):
        fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        unet.to(memory_format=fmt)
        s = sample.contiguous(memory_format=fmt)
        unet_ms[layout] = timed(lambda: unet(s, t, text), reps=10)

    kernels = {}
    biggest = max(calls, key=lambda k: k[0][1] * k[0][2] * k[0][3] * calls[k])
    for layout in ("nchw", "nhwc"):
        fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        m = convs[biggest].to(memory_format=fmt)
        xi = torch.randn(biggest[0], device="cuda", dtype=torch.float16).contiguous(memory_format=fmt)
        m(xi)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            m(xi)
            torch.cuda.synchronize()
        kernels[layout] = [(e.name[:120], round(e.device_time / 1000, 4)) for e in prof.events() if e.device_time > 0]

    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "convolutions_per_step": sum(calls.values()),
              "conv_ms_per_step": {k: round(v, 3) for k, v in totals.items()},
              "unet_forward_ms_eager": {k: round(v, 3) for k, v in unet_ms.items()},
              "kernels_of_biggest": {"conv": str(biggest), **kernels}, "rows": rows}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("device", "cudnn", "convolutions_per_step", "conv_ms_per_step",
                                              "unet_forward_ms_eager", "kernels_of_biggest")}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
