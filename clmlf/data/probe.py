"""The image-sentiment probe: posts whose label only the picture carries (``clmlf probe build``).

Each post is a label-free sentence plus one JPEG: a background (a random crop of a
photograph shipped in an installed package, a colour gradient, or smooth noise)
with one emoji face of Noto Color Emoji (Debian ``fonts-noto-color-emoji``)
composited at a random scale (15-45% of the shorter side), position and small
rotation, sometimes partly covered; the label is the face's class. The text never
depends on the label, so a text-only model stays at chance and anything above it
came through the image path.

Layout written under ``--out DIR`` (the CLMLF release layout, dataset name ``probe``)::

    train.json dev.json test.json     [{"id", "text", "emotion_label"}]  (0 positive, 1 neutral, 2 negative)
    probe_translation.json            [{"id", "text_translation"}]  (a copy of the text)
    dataset_image/<id>.jpg            one per post
    probe_faces.json                  {id: {"glyph", "label", "box": [x0, y0, x1, y1], "width", "height", ...}}
    probe_info.json                   seed, size, glyphs per split

train and dev use the same glyphs (dev = new images of them); **test uses only the
held-out glyphs** (:data:`HELD_OUT`), never seen in training. Every split is
balanced over the three classes (counts differ by at most one). The whole folder is
a function of ``(seed, size, glyphs)``: the same values give byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LABELS: tuple[str, ...] = ("positive", "neutral", "negative")
# Faces with a clear valence, per class. HELD_OUT glyphs appear only in the test split; train and dev draw
# from one glyph set (GLYPH_SETS, --glyphs): "core" (35 faces) or "wide" (core + 32 more, 67 faces).
CORE_GLYPHS: dict[int, tuple[str, ...]] = {
    0: ("\U0001F600", "\U0001F604", "\U0001F606", "\U0001F60A", "\U0001F642", "\U0001F60D", "\U0001F970",
        "\U0001F602", "\U0001F923", "\U0001F60B", "\U0001F929", "\U0001F607"),
    # grinning, smiling eyes, squinting, blush, slight smile, heart eyes, hearts, tears of joy, rolling, yum,
    # star eyes, halo
    1: ("\U0001F610", "\U0001F636", "\U0001F914", "\U0001F644", "\U0001F62F", "\U0001F62E", "\U0001F634",
        "\U0001F9D0", "\U0001F910", "\U0001F632"),
    # neutral, no mouth, thinking, eye roll, hushed, open mouth, sleeping, monocle, zipper mouth, astonished
    2: ("\U0001F620", "\U0001F622", "\U0001F62D", "\U0001F61E", "\U0001F629", "\U0001F616", "\U0001F623",
        "\U0001F62B", "\U0001F624", "\U0001F630", "\U0001F625", "\U0001F641", "\U0001F614"),
    # angry, crying, sobbing, disappointed, weary, confounded, persevering, tired, steam, anxious, sad but
    # relieved, slightly frowning, pensive
}
EXTRA_GLYPHS: dict[int, tuple[str, ...]] = {
    0: ("\U0001F609", "\U0001F917", "\U0001F60E", "\U0001F618", "\U0001F61A", "\U0001F61B", "\U0001F61C",
        "\U0001F61D", "\U0001F973", "\u263A", "\U0001F63A", "\U0001F638", "\U0001F63B"),
    # wink, hug, sunglasses, kiss, kissing closed eyes, tongue, winking tongue, squinting tongue, party,
    # smiling (text style), grinning cat, grinning cat smiling eyes, heart-eyes cat
    1: ("\U0001F637", "\U0001F971", "\U0001F62A", "\U0001FAE1", "\U0001F92B", "\U0001F925", "\U0001FAE2"),
    # mask, yawning, sleepy, saluting, shushing, lying, open eyes hand over mouth
    2: ("\U0001F628", "\U0001F631", "\U0001F613", "\U0001F627", "\U0001F626", "\u2639", "\U0001F63F",
        "\U0001F63E", "\U0001F92C", "\U0001F612", "\U0001F97A", "\U0001F922"),
    # fearful, screaming, downcast sweat, anguished, frowning open mouth, frowning (text style), crying cat,
    # pouting cat, cursing, unamused, pleading, nauseated
}
GLYPH_SETS: dict[str, dict[int, tuple[str, ...]]] = {
    "core": CORE_GLYPHS,
    "wide": {label: CORE_GLYPHS[label] + EXTRA_GLYPHS[label] for label in CORE_GLYPHS},
}
DEFAULT_GLYPHS = "core"
HELD_OUT: dict[int, tuple[str, ...]] = {
    0: ("\U0001F601", "\U0001F603"),  # beaming, grinning with big eyes
    1: ("\U0001F611", "\U0001F928"),  # expressionless, raised eyebrow
    2: ("\U0001F621", "\U0001F61F"),  # pouting (red), worried
}
FONT_PACKAGE = "fonts-noto-color-emoji"
FONT_FILE = "NotoColorEmoji.ttf"
FONT_DIRS = ("/usr/share/fonts/truetype/noto", "/usr/share/fonts/noto", "/usr/share/fonts/truetype",
             "/usr/local/share/fonts")
FONT_SIZE = 109  # the only size of the font's CBDT bitmaps
DEFAULT_SIZE = 3000
MIN_SIZE = 30
DEV_SHARE = TEST_SHARE = 0.15
BACKGROUNDS = ("photo", "gradient", "noise")

# Label-free text: templates and fillers without sentiment words.
_OPENERS = ("posted this", "a picture", "photo", "snapshot", "image", "picture taken", "shot", "frame")
_PLACES = ("at the station", "near the market", "from the office", "on the bus", "in the kitchen",
           "outside the library", "by the river", "at the corner shop", "in the garden", "on the bridge",
           "at the airport", "in the hallway", "downtown", "at the museum", "on the train")
_TIMES = ("this morning", "on tuesday", "at noon", "yesterday", "last week", "around six", "on friday",
          "today", "this evening", "on the weekend")
_TAILS = ("", "", "", " #photo", " #daily", " via phone", " (no filter)", " #street", " for the record")


class ProbeError(ValueError):
    """The probe cannot be built (missing font, bad size); the message is one line."""


@dataclass(frozen=True)
class ProbeConfig:
    """One ``clmlf probe build`` run."""

    out: Path
    size: int = DEFAULT_SIZE
    seed: int = 0
    glyphs: str = DEFAULT_GLYPHS  # the training glyph set (GLYPH_SETS)
    font: Path | None = None  # None: look for Noto Color Emoji in the system font folders

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise ProbeError(f"--size must be >= {MIN_SIZE} (got {self.size})")
        if self.seed < 0:
            raise ProbeError(f"--seed must be >= 0 (got {self.seed})")
        if self.glyphs not in GLYPH_SETS:
            raise ProbeError(f"--glyphs must be one of {', '.join(GLYPH_SETS)} (got {self.glyphs!r})")

    @property
    def train_glyphs(self) -> dict[int, tuple[str, ...]]:
        return GLYPH_SETS[self.glyphs]


def find_emoji_font(explicit: Path | None = None) -> Path:
    """The Noto Color Emoji file, or :class:`ProbeError` naming the Debian package to install."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ProbeError(f"emoji font {explicit} not found (install the Debian package {FONT_PACKAGE}: "
                             f"apt-get install {FONT_PACKAGE})")
        return Path(explicit)
    for folder in FONT_DIRS:
        candidate = Path(folder) / FONT_FILE
        if candidate.is_file():
            return candidate
    raise ProbeError(f"{FONT_FILE} not found in {', '.join(FONT_DIRS)}: install the Debian package {FONT_PACKAGE} "
                     f"(apt-get install {FONT_PACKAGE})")


def render_glyphs(font_path: Path, glyphs: Sequence[str]) -> dict[str, Image.Image]:
    """Each glyph as an RGBA image cropped to its drawn pixels (Pillow, ``embedded_color=True``)."""
    try:
        font = ImageFont.truetype(str(font_path), FONT_SIZE)
    except OSError as exc:
        raise ProbeError(f"{font_path}: not a usable emoji font ({exc}); reinstall {FONT_PACKAGE}") from None
    out = {}
    for glyph in glyphs:
        canvas = Image.new("RGBA", (FONT_SIZE + 40, FONT_SIZE + 40), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((4, 4), glyph, font=font, embedded_color=True)
        box = canvas.getchannel("A").getbbox()
        if box is None:
            raise ProbeError(f"{font_path}: glyph U+{ord(glyph[0]):04X} renders empty (is it Noto Color Emoji?)")
        out[glyph] = canvas.crop(box)
    return out


def package_photos() -> list[Image.Image]:
    """Photographs that ship inside installed packages (scikit-learn, matplotlib); missing ones are skipped."""
    paths = []
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        paths += [folder / "china.jpg", folder / "flower.jpg"]
    except ImportError:
        pass
    try:
        import matplotlib

        paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    photos = []
    for path in paths:
        try:
            with Image.open(path) as img:
                photos.append(img.convert("RGB"))
        except OSError:
            continue
    return photos


# ----------------------------------------------------------------------------- backgrounds


def _photo_crop(photo: Image.Image, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    pw, ph = photo.size
    scale = rng.uniform(0.25, 1.0)
    cw = max(16, min(pw, round(pw * scale)))
    ch = max(16, min(ph, round(cw * height / width)))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _gradient(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * math.cos(angle) / width + ys * math.sin(angle) / height
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + (end - start) * t[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _noise(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    total = np.zeros((height, width, 3), dtype=np.float32)
    weight = 1.0
    for cells in (2, 4, 8, 32):
        grid = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
        total += weight * layer
        weight /= 2
    total = total / total.max() * 255
    return Image.fromarray(np.clip(total, 0, 255).astype(np.uint8))


def _background(rng: np.random.Generator, photos: Sequence[Image.Image], width: int, height: int) -> tuple[Image.Image, str]:
    kinds = BACKGROUNDS if photos else BACKGROUNDS[1:]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "photo":
        image = _photo_crop(photos[int(rng.integers(len(photos)))], rng, width, height)
    elif kind == "gradient":
        image = _gradient(rng, width, height)
    else:
        image = _noise(rng, width, height)
    return image, kind


# ----------------------------------------------------------------------------- one post


def visible_square(width: int, height: int, keep: float = 224 / 256) -> tuple[int, int, int, int]:
    """The central square the model's resize + center crop keeps (as a box in image pixels)."""
    side = int(min(width, height) * keep)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def compose(
    glyph_image: Image.Image, rng: np.random.Generator, photos: Sequence[Image.Image]
) -> tuple[Image.Image, dict]:
    """A background with the face composited on it -> (RGB image, face record without id/label)."""
    width, height = int(rng.integers(200, 401)), int(rng.integers(200, 401))
    image, kind = _background(rng, photos, width, height)
    vx0, vy0, vx1, vy1 = visible_square(width, height)
    side = vx1 - vx0
    face_side = max(12, round(min(width, height) * rng.uniform(0.15, 0.45)))
    face = glyph_image.resize((face_side, face_side), Image.Resampling.LANCZOS)
    angle = float(rng.uniform(-20, 20))
    face = face.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    fw, fh = face.size
    fw_fit, fh_fit = min(fw, side), min(fh, side)  # the face lies inside what the center crop keeps
    x = vx0 + int(rng.integers(0, side - fw_fit + 1))
    y = vy0 + int(rng.integers(0, side - fh_fit + 1))
    image.paste(face, (x, y), face)
    alpha_box = face.getchannel("A").getbbox() or (0, 0, fw, fh)
    box = [x + alpha_box[0], y + alpha_box[1], x + alpha_box[2], y + alpha_box[3]]
    occluded = bool(rng.random() < 0.2)
    if occluded:  # a blurred blob over up to a third of the face
        bw, bh = box[2] - box[0], box[3] - box[1]
        ow, oh = bw * rng.uniform(0.25, 0.5), bh * rng.uniform(0.25, 0.6)
        ox = box[0] + rng.uniform(-0.1, 1.0) * bw - ow / 2
        oy = box[1] + rng.uniform(-0.1, 1.0) * bh - oh / 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw = ImageDraw.Draw(image)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((ox, oy, ox + ow, oy + oh), fill=colour)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    record = {"box": box, "width": width, "height": height, "angle": round(angle, 2), "occluded": occluded,
              "background": kind, "quality": int(rng.integers(55, 96))}
    return image, record


def label_free_text(rng: np.random.Generator) -> str:
    """A sentence with no sentiment word, drawn independently of the label."""
    parts = [_OPENERS[int(rng.integers(len(_OPENERS)))], _PLACES[int(rng.integers(len(_PLACES)))]]
    if rng.random() < 0.6:
        parts.append(_TIMES[int(rng.integers(len(_TIMES)))])
    return " ".join(parts) + _TAILS[int(rng.integers(len(_TAILS)))]


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the data set


def split_sizes(size: int) -> dict[str, int]:
    n_dev, n_test = round(size * DEV_SHARE), round(size * TEST_SHARE)
    return {"train": size - n_dev - n_test, "dev": n_dev, "test": n_test}


def balanced_labels(n: int, rng: np.random.Generator) -> list[int]:
    """``n`` labels, each class ``n // 3`` or one more times, in random order."""
    labels = np.arange(n) % len(LABELS)
    rng.shuffle(labels)
    return [int(v) for v in labels]


def build_probe(config: ProbeConfig) -> dict[str, int]:
    """Write the probe data set under ``config.out``; returns the number of posts per split."""
    font = find_emoji_font(config.font)
    train_glyphs = config.train_glyphs
    all_glyphs = [g for cls in (train_glyphs, HELD_OUT) for glyphs in cls.values() for g in glyphs]
    rendered = render_glyphs(font, all_glyphs)
    photos = package_photos()
    out = Path(config.out)
    images = out / "dataset_image"
    images.mkdir(parents=True, exist_ok=True)
    sizes = split_sizes(config.size)
    root = np.random.SeedSequence([config.seed, 20260])
    split_seeds = dict(zip(sizes, root.spawn(len(sizes)), strict=True))
    translations, faces = [], {}
    next_id = 0
    for split, count in sizes.items():
        rng = np.random.default_rng(split_seeds[split])
        glyph_sets = HELD_OUT if split == "test" else train_glyphs
        entries = []
        for label in balanced_labels(count, rng):
            post_id = str(next_id)
            next_id += 1
            glyph = glyph_sets[label][int(rng.integers(len(glyph_sets[label])))]
            image, record = compose(rendered[glyph], rng, photos)
            text = label_free_text(rng)
            (images / f"{post_id}.jpg").write_bytes(jpeg_bytes(image, record["quality"]))
            entries.append({"id": post_id, "text": text, "emotion_label": label})
            translations.append({"id": post_id, "text_translation": text})
            faces[post_id] = {"split": split, "label": label, "glyph": glyph, "codepoint": f"U+{ord(glyph):04X}",
                              **record}
        _write_json(out / f"{split}.json", entries)
    _write_json(out / "probe_translation.json", translations)
    _write_json(out / "probe_faces.json", faces)
    info = {
        "dataset": "probe", "seed": config.seed, "size": config.size, "splits": sizes, "labels": list(LABELS),
        "glyph_set": config.glyphs, "train_glyphs": {LABELS[k]: list(v) for k, v in train_glyphs.items()},
        "held_out_glyphs (test split only)": {LABELS[k]: list(v) for k, v in HELD_OUT.items()},
        "font": FONT_FILE, "background_photos": len(photos),
    }
    _write_json(out / "probe_info.json", info)
    return sizes


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_faces(data_root: str | Path) -> dict[str, dict]:
    """``probe_faces.json`` of a probe folder: post id -> face record (box in original image pixels)."""
    path = Path(data_root) / "probe_faces.json"
    if not path.is_file():
        raise ProbeError(f"{path}: not found (is --data-root a folder written by clmlf probe build?)")
    return json.loads(path.read_text(encoding="utf-8"))


def face_patches(record: dict, resize: int, crop: int, grid: int = 7) -> np.ndarray:
    """Bool [grid, grid]: patches of the model's input (resize shorter side, center crop) that overlap the face."""
    width, height = record["width"], record["height"]
    scale = resize / min(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    x0, y0, x1, y1 = (v * scale for v in record["box"])
    x0, x1 = x0 - left, x1 - left
    y0, y1 = y0 - top, y1 - top
    cell = crop / grid
    mask = np.zeros((grid, grid), dtype=bool)
    for row in range(grid):
        for col in range(grid):
            cx0, cy0 = col * cell, row * cell
            if x0 < cx0 + cell and x1 > cx0 and y0 < cy0 + cell and y1 > cy0:
                mask[row, col] = True
    return mask
