"""Samples the shapes model with diffusers and measures whether each image matches its prompt: the colour of the
shape and of the background, the position of the shape's centre and its size. The measurement is the one
test/helpers/measure.ts makes on candlewick's images (keep the two in step).

    python scripts/sample_demo_model.py --model test/fixtures/shapes-sd --out DIR
"""

import argparse
import json
import os
import random

import numpy as np
import torch

BORDER = 2  # pixels of the image's edge that give the background colour
SHAPE_THRESHOLD = 60  # a pixel belongs to the shape when a channel differs from the background by more


def measure(img, vocab):
    """img: uint8 [H, W, 3]. Returns the named background, colour, position and size it shows (None if no shape)."""
    h, w, _ = img.shape
    px = img.astype(np.int32)
    edge = np.ones((h, w), bool)
    edge[BORDER:h - BORDER, BORDER:w - BORDER] = False
    bg = np.median(px[edge], axis=0)
    mask = np.abs(px - bg).max(axis=2) > SHAPE_THRESHOLD
    names = list(vocab["colours"])
    palette = np.array([vocab["colours"][k] for k in names], dtype=np.float64)

    def nearest(rgb):
        return names[int(np.argmin(((palette - rgb) ** 2).sum(1)))]

    out = {"background": nearest(bg), "colour": None, "position": None, "size": None}
    if mask.sum() < 8:
        return out
    ys, xs = np.nonzero(mask)
    out["colour"] = nearest(np.median(px[mask], axis=0))
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    out["position"] = min(vocab["positions"], key=lambda k: (vocab["positions"][k][0] - cx) ** 2 + (vocab["positions"][k][1] - cy) ** 2)
    cols, rows = np.nonzero(mask.sum(0) >= 2)[0], np.nonzero(mask.sum(1) >= 2)[0]
    extent = max((cols[-1] - cols[0] + 1) / w if len(cols) else 0, (rows[-1] - rows[0] + 1) / h if len(rows) else 0)
    out["size"] = "small" if extent < vocab["size_split"] else "large"
    return out


def prompts(vocab, n, seed):
    """n full captions with random attributes (the same rule as test/meaning.test.ts uses, its own seed)."""
    rng = random.Random(seed)
    colours = list(vocab["colours"])
    out = []
    for _ in range(n):
        c = rng.choice(colours)
        b = rng.choice([x for x in colours if x != c])
        a = dict(size=rng.choice(list(vocab["sizes"])), colour=c, shape=rng.choice(vocab["shapes"]), background=b,
                 position=rng.choice(list(vocab["positions"])))
        out.append(a)
    return out


def report(model, out_dir, device, n_prompts=64, steps=20):
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    import shapes_dataset as ds

    os.makedirs(out_dir, exist_ok=True)
    vocab = json.load(open(os.path.join(model, "dataset.json")))
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    cases = prompts(vocab, n_prompts, 7)
    texts = [ds.caption(a["size"], a["colour"], a["shape"], a["background"], a["position"]) for a in cases]
    lines = []
    for g in (1.0, 7.5):
        gen = [torch.Generator(device).manual_seed(i) for i in range(len(texts))]
        imgs = pipe(texts, num_inference_steps=steps, guidance_scale=g, generator=gen, output_type="np").images
        imgs = (imgs * 255).round().astype(np.uint8)
        hits = {k: 0 for k in ("colour", "background", "position", "size", "all")}
        for a, im in zip(cases, imgs):
            m = measure(im, vocab)
            ok = [m[k] == a[k] for k in ("colour", "background", "position", "size")]
            for k, v in zip(("colour", "background", "position", "size"), ok):
                hits[k] += v
            hits["all"] += all(ok)
        line = f"guidance {g}: " + ", ".join(f"{k} {v}/{len(cases)}" for k, v in hits.items())
        print(line, flush=True)
        lines.append(line)
        grid = Image.new("RGB", (8 * 66, (len(imgs) + 7) // 8 * 66), (255, 255, 255))
        for i, im in enumerate(imgs):
            grid.paste(Image.fromarray(im), ((i % 8) * 66 + 1, (i // 8) * 66 + 1))
        grid.save(os.path.join(out_dir, f"samples_g{g}.png"))
    with open(os.path.join(out_dir, "samples.txt"), "w") as f:
        f.write("\n".join(f"{i}: {t}" for i, t in enumerate(texts)) + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=64)
    a = p.parse_args()
    report(a.model, a.out, a.device, a.n)
