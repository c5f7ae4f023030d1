#!/usr/bin/env python3
"""Procedural captioned images for training hyrt's bundled shapes model.

Each sample is a flat background colour with 1-3 copies of one shape (circle, square,
triangle) in one colour, e.g. "two small green squares on a yellow background". Everything
is a pure function of the random generator passed in, so a seed reproduces a data set.

The pictures are made to be judged later by plain image analysis (src/eval/shape_check):
no anti-aliasing, axis-aligned shapes, apex-up isosceles triangles, shapes never touching
(gap >= GAP px between bounding boxes), and a minimum size so they survive the VAE's 8x
downsampling. Colours come from train/palette.json, which the C++ checker reads too.

Caption grammar (src/eval/shape_check.cpp parses the same one):
  caption  := number [size] colour shape-noun [position] " on " article background " background"
  number   := "a" | "an" (count 1, "an" before a vowel) | "two" | "three"
  size     := "small" | "large"
  noun     := circle | square | triangle, plus "s" when count > 1
  position := " in the center" | " at the " pos   (only for count 1)
  pos      := "top left" | "top" | "top right" | "left" | "right" | "bottom left" | ...

CLI: python3 train/shapes_data.py --out DIR --count N --seed S [--size 64]
         [--holdout "purple triangle,orange circle"] [--cover]
writes DIR/000000.png ... and DIR/captions.jsonl (one {"file", "caption", "labels"} a line).
"""

import argparse
import json
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw

PALETTE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "palette.json")
with open(PALETTE_PATH) as f:
    PALETTE = {k: tuple(v) for k, v in json.load(f)["colours"].items()}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
SIZES = ["small", "large"]
NUMBER_WORDS = {2: "two", 3: "three"}
# 3x3 grid cells, row-major; the name of the cell holding a shape's centre.
POSITIONS = ["top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right"]

GAP = 4  # px between bounding boxes: components stay separate after a blur
MARGIN = 2  # px from the image edge: the checker reads the background from the border


def side_range(size_word, count, image_size):
    """Bounding-box side in px. Small stays >= 12 px at 64x64 (1.5 latent cells)."""
    s = image_size / 64.0
    if size_word == "small":
        return int(12 * s), int(16 * s)
    if count == 1:
        return int(26 * s), int(36 * s)
    return int(20 * s), int(24 * s)  # large, but three must still fit apart


def place(rng, sides, image_size):
    """Top-left corners for boxes of the given sides, separated by GAP; None if stuck."""
    boxes = []
    for side in sides:
        for _ in range(200):
            x = rng.randint(MARGIN, image_size - MARGIN - side)
            y = rng.randint(MARGIN, image_size - MARGIN - side)
            if all(x + side + GAP <= bx or bx + bs + GAP <= x or
                   y + side + GAP <= by or by + bs + GAP <= y for bx, by, bs in boxes):
                boxes.append((x, y, side))
                break
        else:
            return None
    return boxes


def position_name(cx, cy, image_size):
    col = min(2, int(3 * cx / image_size))
    row = min(2, int(3 * cy / image_size))
    return POSITIONS[3 * row + col]


def draw_shape(draw, shape, x, y, side, rgb):
    x1, y1 = x + side - 1, y + side - 1  # PIL boxes are inclusive
    if shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=rgb)
    elif shape == "square":
        draw.rectangle([x, y, x1, y1], fill=rgb)
    else:  # apex up, base on the bottom edge: area is half the box
        draw.polygon([(x + (side - 1) / 2.0, y), (x1, y1), (x, y1)], fill=rgb)


def caption_for(labels, with_size, with_position):
    count, colour = labels["count"], labels["colour"]
    if count == 1:
        first = (labels["size"] if with_size else colour)
        number = "an" if first[0] in "aeiou" else "a"
    else:
        number = NUMBER_WORDS[count]
    words = [number] + ([labels["size"]] if with_size else [])
    words += [colour, labels["shape"] + ("s" if count > 1 else "")]
    text = " ".join(words)
    if with_position and count == 1:
        pos = labels["positions"][0]
        text += " in the center" if pos == "center" else " at the " + pos
    bg = labels["background"]
    return text + " on " + ("an " if bg[0] in "aeiou" else "a ") + bg + " background"


def sample(rng, image_size=64, holdout=(), shape=None, colour=None, count=None, size=None,
           background=None):
    """One (image uint8 [H, W, 3], caption, labels) from `rng` (a random.Random).

    Keyword arguments fix an attribute instead of drawing it. `holdout` is a collection of
    "colour shape" strings never produced (asking for one explicitly raises ValueError).
    """
    holdout = set(holdout)
    if shape and colour and f"{colour} {shape}" in holdout:
        raise ValueError(f"{colour} {shape} is held out")
    while True:
        sh = shape or rng.choice(SHAPES)
        col = colour or rng.choice(COLOURS)
        if f"{col} {sh}" not in holdout:
            break
    bg = background or rng.choice([c for c in COLOURS if c != col])
    if bg == col:
        raise ValueError("background must differ from the shape colour")
    n = count or rng.randint(1, 3)
    sz = size or rng.choice(SIZES)
    lo, hi = side_range(sz, n, image_size)
    boxes = None
    while boxes is None:
        boxes = place(rng, [rng.randint(lo, hi) for _ in range(n)], image_size)

    img = Image.new("RGB", (image_size, image_size), PALETTE[bg])
    draw = ImageDraw.Draw(img)
    for x, y, side in boxes:
        draw_shape(draw, sh, x, y, side, PALETTE[col])
    labels = {
        "shape": sh, "colour": col, "background": bg, "count": n, "size": sz,
        "positions": [position_name(x + side / 2, y + side / 2, image_size)
                      for x, y, side in boxes],
        "boxes": [[x, y, side] for x, y, side in boxes],
    }
    caption = caption_for(labels, rng.random() < 0.7, rng.random() < 0.5)
    return np.asarray(img, dtype=np.uint8), caption, labels


def cover_attributes(i):
    """Attributes for the i-th image of a --cover set: 24 images hold every colour twice,
    every shape x count pair and both sizes with each count."""
    return dict(shape=SHAPES[i % 3], count=(i // 3) % 3 + 1, colour=COLOURS[i % len(COLOURS)],
                size=SIZES[(i // 9 + i) % 2])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True,
                    help="image i uses random.Random(seed + i): no two images share a seed")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--holdout", default="",
                    help='comma-separated "colour shape" pairs to leave out')
    ap.add_argument("--cover", action="store_true",
                    help="cycle shape, colour, count and size (small test sets)")
    args = ap.parse_args(argv)
    holdout = [h.strip() for h in args.holdout.split(",") if h.strip()]
    for h in holdout:
        c, _, s = h.partition(" ")
        if c not in PALETTE or s not in SHAPES:
            ap.error(f"--holdout: {h!r} is not 'colour shape'")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "captions.jsonl"), "w") as out:
        for i in range(args.count):
            rng = random.Random(args.seed + i)
            fixed = cover_attributes(i) if args.cover else {}
            if f"{fixed.get('colour')} {fixed.get('shape')}" in holdout:
                fixed.pop("colour")
            image, caption, labels = sample(rng, args.size, holdout, **fixed)
            name = f"{i:06d}.png"
            Image.fromarray(image).save(os.path.join(args.out, name), optimize=True)
            out.write(json.dumps({"file": name, "caption": caption, "labels": labels}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
