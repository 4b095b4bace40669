"""How far two runs' images are apart: raw 8-bit RGB files written by bench.mjs with SAVE_RGB (same sizes,
same order). Prints one JSON line: equal bytes or not, PSNR in dB, the largest difference, differing bytes.
    python3 bench/gpu/rgb_diff.py A.rgb B.rgb"""
import json
import math
import sys

a, b = (open(p, "rb").read() for p in sys.argv[1:3])
if len(a) != len(b):
    sys.exit(f"sizes differ: {len(a)} and {len(b)} bytes")
diffs = [abs(x - y) for x, y in zip(a, b) if x != y]
mse = sum(d * d for d in diffs) / len(a)
print(json.dumps({"a": sys.argv[1], "b": sys.argv[2], "equal": not diffs, "bytes": len(a), "differing_bytes": len(diffs),
                  "max_abs": max(diffs, default=0), "psnr_db": math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)}))
