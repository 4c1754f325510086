"""Write a small synthetic dataset in the Pascal VOC layout (deterministic).

    python make_data.py OUT_DIR [--train N] [--val N] [--size S] [--seed K]

OUT_DIR/JPEGImages/<id>.jpg         RGB, quality 100, no chroma subsampling
OUT_DIR/SegmentationClassAug/<id>.png  8-bit class ids (mode L), VOC ids 0..20
OUT_DIR/train_aug.txt, val.txt      id lists, as the original's build_data.py reads them

Also a view of the same files as this project's labelled-folder layout, used only for
evaluation (whole images, no padding to 513): OUT_DIR/folder/{images,labels} are symlinks
to the two folders above, folder/classes.txt the 21 VOC names, folder/{train,val}.txt.

Each image: a textured background (class 0) and 2-4 shapes of distinct object classes
drawn from CLASS_IDS (so every image has >= 3 classes, as the split sampler wants).
Each class has its own shape, base colour and texture, with per-image jitter.
"""
import argparse
import os

import numpy as np
from PIL import Image

VOC = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
       "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
       "sheep", "sofa", "train", "tvmonitor"]
# object classes used (VOC ids); the other 14 VOC classes never occur
CLASS_IDS = [1, 3, 7, 8, 12, 15]
# per class: shape, base colour, texture
STYLE = {
    1: ("disc", (200, 40, 40), "stripes"),
    3: ("square", (40, 180, 60), "plain"),
    7: ("triangle", (50, 70, 200), "checker"),
    8: ("disc", (210, 200, 50), "checker"),
    12: ("square", (170, 60, 190), "stripes"),
    15: ("ellipse", (60, 190, 190), "noise"),
}


def texture(kind, h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(5, 9)
        ang = rng.uniform(0, np.pi)
        t = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
    elif kind == "checker":
        p = int(rng.integers(4, 8))
        t = (((xx // p) + (yy // p)) % 2) * 2 - 1
    elif kind == "noise":
        t = rng.standard_normal((h, w)).astype(np.float32)
    else:
        t = np.zeros((h, w), np.float32)
    return t[..., None]


def shape_mask(kind, h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = rng.uniform(0.12, 0.25) * min(h, w)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == "ellipse":
        a, b = r * 1.3, r * 0.7
        return ((yy - cy) / b) ** 2 + ((xx - cx) / a) ** 2 <= 1
    if kind == "square":
        return (np.abs(yy - cy) <= r * 0.9) & (np.abs(xx - cx) <= r * 0.9)
    # triangle pointing up
    top, bottom = cy - r, cy + r
    half = (yy - top) / (2 * r) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def make_image(rng, size):
    h = w = size
    bg_col = rng.uniform(90, 150, size=3)
    img = np.ones((h, w, 3), np.float32) * bg_col
    img += 25 * rng.standard_normal((h, w, 1)).astype(np.float32) * 0.5
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img += (20 * np.sin(xx / rng.uniform(10, 30)) * np.cos(yy / rng.uniform(10, 30)))[..., None]
    label = np.zeros((h, w), np.uint8)
    k = int(rng.integers(2, 5))
    for c in rng.choice(CLASS_IDS, size=k, replace=False):
        shape, col, tex = STYLE[int(c)]
        m = shape_mask(shape, h, w, rng)
        colour = np.array(col, np.float32) + rng.uniform(-25, 25, size=3)
        patch = colour + 35 * texture(tex, h, w, rng)
        img[m] = patch[m]
        label[m] = c
    img += 6 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=2022)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for d in ("JPEGImages", "SegmentationClassAug", "folder"):
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    lists = {"train": [], "val": []}
    for split, n in (("train", a.train), ("val", a.val)):
        for i in range(n):
            idx = f"{split}_{i:04d}"
            img, lab = make_image(rng, a.size)
            Image.fromarray(img).save(os.path.join(a.out, "JPEGImages", idx + ".jpg"),
                                      quality=100, subsampling=0)
            Image.fromarray(lab, mode="L").save(os.path.join(a.out, "SegmentationClassAug", idx + ".png"))
            lists[split].append(idx)
    for name, key in (("train_aug.txt", "train"), ("val.txt", "val")):
        with open(os.path.join(a.out, name), "w") as f:
            f.write("\n".join(lists[key]) + "\n")
    fold = os.path.join(a.out, "folder")
    for link, target in (("images", "../JPEGImages"), ("labels", "../SegmentationClassAug")):
        p = os.path.join(fold, link)
        if not os.path.islink(p):
            os.symlink(target, p)
    with open(os.path.join(fold, "classes.txt"), "w") as f:
        f.write("\n".join(VOC) + "\n")
    for name, key in (("train.txt", "train"), ("val.txt", "val")):
        with open(os.path.join(fold, name), "w") as f:
            f.write("\n".join(lists[key]) + "\n")
    print(f"wrote {a.train} train + {a.val} val images of {a.size}x{a.size} to {a.out}")


if __name__ == "__main__":
    main()
