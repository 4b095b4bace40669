"""The synthetic captioned dataset of the shapes model: one shape in a named colour on a named background, at a
named position and size, drawn at 64x64 with torch (on any device), with its caption.

    "a large red circle on a white background, top left"

The vocabulary (colour RGB values, shapes, positions, sizes) is written beside the model as dataset.json, which
the meaning tests (test/meaning.test.ts) read to measure generated images against their prompts.
"""

import math

import torch

SIZE = 64
# Named colours (RGB 0..255). Every pair differs by at least 80 in some channel, so a shape is always
# distinguishable from its background.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "purple": (140, 50, 180),
    "pink": (250, 130, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPES = ["circle", "square", "triangle", "star"]
# Position words -> centre (x, y) as fractions of the width and height (y down).
POSITIONS = {
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
    "in the center": (0.5, 0.5),
}
# Size words -> the shape's outer radius range, as a fraction of the width.
SIZES = {"small": (0.09, 0.12), "large": (0.18, 0.22)}
POSITION_JITTER = 0.025
COLOUR_JITTER = 8
# Each attribute is left out of a caption with this probability (the model then learns that attribute's
# spread, which negative prompts can push away from); the whole caption is empty with P_EMPTY
# (classifier-free guidance's unconditional case).
P_DROP = 0.15
P_EMPTY = 0.1


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def caption(size, colour, shape, background, position):
    """The caption for the given attributes; None leaves an attribute out."""
    words = [w for w in (size, colour) if w] + [shape]
    text = f"{article(words[0])} {' '.join(words)}"
    if background:
        text += f" on {article(background)} {background} background"
    if position:
        text += f", {position}"
    return text


def vocabulary():
    """What dataset.json holds: every name with its numbers, and the caption template."""
    return {
        "size": SIZE,
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "shapes": SHAPES,
        "positions": {k: list(v) for k, v in POSITIONS.items()},
        "sizes": {k: list(v) for k, v in SIZES.items()},
        "position_jitter": POSITION_JITTER,
        # Measured extent (the larger side of the shape's bounding box, as a fraction of the width) that splits
        # small from large: small shapes reach at most 0.26 (a triangle at r = 0.12), large ones at least 0.31 (a
        # square at r = 0.18).
        "size_split": 0.28,
        "caption": "{a} {size} {colour} {shape} on {a} {background} background, {position} (any part but the shape may be left out)",
        "p_drop_each": P_DROP,
        "p_empty": P_EMPTY,
    }


def sample_attributes(n, generator):
    """n random samples: dicts of index tensors (colour != background) and jitter values, on the CPU."""
    nc = len(COLOURS)
    colour = torch.randint(nc, (n,), generator=generator)
    # A background different from the colour: colour + 1..nc-1 modulo nc.
    background = (colour + torch.randint(1, nc, (n,), generator=generator)) % nc
    return {
        "colour": colour,
        "background": background,
        "shape": torch.randint(len(SHAPES), (n,), generator=generator),
        "position": torch.randint(len(POSITIONS), (n,), generator=generator),
        "size": torch.randint(len(SIZES), (n,), generator=generator),
        "radius_u": torch.rand(n, generator=generator),
        "jitter": (torch.rand(n, 2, generator=generator) * 2 - 1) * POSITION_JITTER,
        "colour_jitter": torch.randint(-COLOUR_JITTER, COLOUR_JITTER + 1, (n, 2, 3), generator=generator),
        "angle": (torch.rand(n, generator=generator) * 2 - 1) * 0.15,  # small rotation of triangles and stars
        "keep": torch.rand(n, 4, generator=generator) >= P_DROP,  # size, colour, background, position
        "empty": torch.rand(n, generator=generator) < P_EMPTY,
    }


def captions(attrs):
    """The caption of each sample ("" for the unconditional ones)."""
    names_c, names_p, names_s = list(COLOURS), list(POSITIONS), list(SIZES)
    out = []
    for i in range(len(attrs["colour"])):
        if attrs["empty"][i]:
            out.append("")
            continue
        k = attrs["keep"][i].tolist()
        out.append(caption(
            names_s[attrs["size"][i]] if k[0] else None,
            names_c[attrs["colour"][i]] if k[1] else None,
            SHAPES[attrs["shape"][i]],
            names_c[attrs["background"][i]] if k[2] else None,
            names_p[attrs["position"][i]] if k[3] else None,
        ))
    return out


def render(attrs, device):
    """Images [n, 3, SIZE, SIZE] in [-1, 1] for the samples in attrs (antialiased edges, 1 pixel wide)."""
    n = len(attrs["colour"])
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32, device=device)
    centres = torch.tensor(list(POSITIONS.values()), dtype=torch.float32, device=device)
    radii = torch.tensor(list(SIZES.values()), dtype=torch.float32, device=device)
    a = {k: v.to(device) for k, v in attrs.items()}
    centre = centres[a["position"]] + a["jitter"]  # [n, 2] (x, y)
    lo, hi = radii[a["size"], 0], radii[a["size"], 1]
    r = (lo + (hi - lo) * a["radius_u"]) * SIZE  # pixels
    coords = (torch.arange(SIZE, device=device, dtype=torch.float32) + 0.5)
    x = coords.view(1, 1, SIZE) - (centre[:, 0] * SIZE).view(n, 1, 1)
    y = coords.view(1, SIZE, 1) - (centre[:, 1] * SIZE).view(n, 1, 1)
    # Rotate the frame by the sample's angle (only used by triangles and stars).
    cos, sin = torch.cos(a["angle"]).view(n, 1, 1), torch.sin(a["angle"]).view(n, 1, 1)
    xr, yr = cos * x + sin * y, -sin * x + cos * y
    rr = r.view(n, 1, 1)
    dist = torch.sqrt(x * x + y * y)
    # Signed distances (pixels, negative inside), one per shape kind.
    sd_circle = dist - rr
    sd_square = torch.maximum(x.abs(), y.abs()) - rr * 0.85
    # Upward triangle inscribed in the circle of radius r (edges' outward normals at -90, 30, 150 degrees
    # in image coordinates, y down), shifted down by r/4 so that its bounding box is centred.
    yt = yr - rr * 0.25
    edges = [(math.cos(t), math.sin(t)) for t in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)]
    sd_triangle = torch.stack([xr * ex + yt * ey for ex, ey in edges]).amax(0) - rr * 0.5 * 1.25
    # Five-pointed star: the outline radius goes linearly between r and 0.45 r over each 36 degrees.
    theta = torch.atan2(xr, -yr)  # 0 at the top
    seg = torch.remainder(theta, 2 * math.pi / 5) / (2 * math.pi / 5)  # 0..1 within one point's sector
    tri = (2 * seg - 1).abs()  # 1 at a point, 0 between points
    outline = rr * (0.45 + 0.55 * tri)
    sd_star = (dist - outline) * 0.8
    sd = torch.stack([sd_circle, sd_square, sd_triangle, sd_star])[a["shape"], torch.arange(n, device=device)]
    cover = (0.5 - sd).clamp(0, 1).unsqueeze(1)  # [n, 1, H, W]
    fg = (palette[a["colour"]] + a["colour_jitter"][:, 0].float()).clamp(0, 255).view(n, 3, 1, 1)
    bg = (palette[a["background"]] + a["colour_jitter"][:, 1].float()).clamp(0, 255).view(n, 3, 1, 1)
    img = bg + (fg - bg) * cover
    return img / 127.5 - 1
