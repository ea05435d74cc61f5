"""Benchmark the image stage on one core: decode + resize 256 + center crop 224, with and without JPEG draft mode.

Generates realistic JPEGs (smooth gradients + noise, quality 85) of about 1, 2 and
3 megapixels, then times ``clmlf.fetch.decode.decode_image`` -> ``resize_shorter_side(256)``
-> ``center_crop(224)`` in this single thread. Each round times every image once;
the reported figures are medians over rounds of images per second, measured by
this thread's CPU time (= one dedicated core; robust on a shared machine) and by
wall clock.

Examples::

    .venv/bin/python bench/image_decode.py                    # 1, 2, 3 MP, 7 rounds, markdown table
    .venv/bin/python bench/image_decode.py --rounds 15 --json  # machine-readable
    .venv/bin/python bench/image_decode.py --megapixels 0.5 12 --images 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

from clmlf.fetch.decode import center_crop, decode_image, resize_shorter_side

RESIZE, CROP = 256, 224


def synthetic_jpeg(megapixels: float, seed: int, quality: int = 85) -> bytes:
    """A 3:2 JPEG of about ``megapixels`` MP: colour gradients, a few soft blobs and sensor-like noise."""
    height = int(round((megapixels * 1e6 / 1.5) ** 0.5))
    width = int(round(height * 1.5))
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(40, 200, 3)
        plane = a * x + b * y + c * x * y
        for _blob in range(4):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            plane += rng.uniform(-60, 60) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        channels.append(plane)
    pixels = np.stack(channels, axis=-1) + rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pipeline(data: bytes, draft: bool) -> Image.Image:
    img = decode_image(data, target_size=RESIZE if draft else None)
    return center_crop(resize_shorter_side(img, RESIZE), CROP)


def measure(images: list[bytes], draft: bool, rounds: int, progress: tqdm) -> tuple[float, float]:
    """Medians over rounds of images/s: by wall clock, and by this thread's CPU time.

    The CPU-time rate is what one dedicated core would do; it is robust to other
    processes sharing the machine, the wall-clock rate is not.
    """
    pipeline(images[0], draft)  # warm-up: code paths, allocator
    wall_rates, cpu_rates = [], []
    for _ in range(rounds):
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for data in images:
            out = pipeline(data, draft)
            assert out.size == (CROP, CROP)
        cpu_rates.append(len(images) / max(time.thread_time() - cpu0, 1e-9))
        wall_rates.append(len(images) / (time.perf_counter() - wall0))
        progress.update(1)
    return statistics.median(wall_rates), statistics.median(cpu_rates)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, Pillow {Image.__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/image_decode.py --rounds 9 --megapixels 1 2 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="image sizes")
    parser.add_argument("--images", type=int, default=4, help="distinct images per size (default 4)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds; the median is reported")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality of the test images")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1 or args.rounds < 1 or any(mp <= 0 for mp in args.megapixels):
        print("image_decode.py: error: --images, --rounds and --megapixels must be positive", file=sys.stderr)
        return 2
    rows = []
    with tqdm(total=len(args.megapixels) * 2 * args.rounds, desc="benchmark", unit="round", file=sys.stderr) as bar:
        for mp in args.megapixels:
            images = [synthetic_jpeg(mp, seed, args.quality) for seed in range(args.images)]
            size = Image.open(io.BytesIO(images[0])).size
            full_wall, full_cpu = measure(images, draft=False, rounds=args.rounds, progress=bar)
            draft_wall, draft_cpu = measure(images, draft=True, rounds=args.rounds, progress=bar)
            rows.append({
                "megapixels": mp,
                "size": f"{size[0]}x{size[1]}",
                "kib": round(statistics.mean(len(d) for d in images) / 1024),
                "full_cpu_per_s": round(full_cpu, 1),
                "draft_cpu_per_s": round(draft_cpu, 1),
                "speedup": round(draft_cpu / full_cpu, 2),
                "full_wall_per_s": round(full_wall, 1),
                "draft_wall_per_s": round(draft_wall, 1),
            })
    result = {"machine": machine(), "threads": 1, "rounds": args.rounds, "images_per_size": args.images,
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {result['machine']}; 1 thread; median of {args.rounds} rounds x {args.images} images\n")
    print("| JPEG | size | mean KiB | full decode, img/s per core | draft mode, img/s per core | speed-up "
          "| full, wall img/s | draft, wall img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['megapixels']:g} MP | {r['size']} | {r['kib']} | {r['full_cpu_per_s']} | "
              f"{r['draft_cpu_per_s']} | {r['speedup']}x | {r['full_wall_per_s']} | {r['draft_wall_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
