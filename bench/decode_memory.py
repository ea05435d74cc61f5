#!/usr/bin/env python3
"""Peak memory of decoding one large image, per pixel: the figure the decode budget is sized by.

    .venv/bin/python bench/decode_memory.py [--side 6300 3000]

For each mode (RGBA, LA, P with transparency, RGB, L, I;16) and side, a fresh Python process
builds a side x side PNG of that mode, then runs the consumer's image path on it
(``clmlf.fetch.decode.decode_image`` at target 256, then ``resize_and_center_crop(256, 224)``) and
reports the growth of its peak RSS (``ru_maxrss``) over the decode, in MB and bytes per pixel.
One process per case, so earlier cases do not hide later peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import gc, io, json, resource, sys
sys.path.insert(0, sys.argv[3])
from PIL import Image
side, mode = int(sys.argv[1]), sys.argv[2]
fill = {"RGBA": (10, 200, 30, 128), "LA": (90, 128), "RGB": (10, 200, 30), "L": 90, "I;16": 30000, "P": 3}[mode]
img = Image.new(mode, (side, side), fill)
if mode == "P":
    img.info["transparency"] = 3
buf = io.BytesIO()
img.save(buf, "PNG", **({"transparency": 3} if mode == "P" else {}))
data = buf.getvalue()
del img, buf
gc.collect()
from clmlf.fetch.decode import decode_image, resize_and_center_crop
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
resize_and_center_crop(decode_image(data, 256), 256, 224)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"png_bytes": len(data), "peak_kib": peak - base}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, nargs="+", default=[6300, 3000])
    parser.add_argument("--modes", nargs="+", default=["RGBA", "LA", "P", "RGB", "L", "I;16"])
    args = parser.parse_args()
    print("| mode | size | PNG KiB | peak growth MB | bytes per pixel |")
    print("|---|---|---|---|---|")
    for side in args.side:
        for mode in args.modes:
            done = subprocess.run([sys.executable, "-c", CHILD, str(side), mode, str(ROOT)], capture_output=True,
                                  text=True, check=True, env={"OMP_NUM_THREADS": "1"})
            row = json.loads(done.stdout)
            peak = row["peak_kib"] * 1024
            print(f"| {mode} | {side}x{side} | {row['png_bytes'] / 1024:.0f} | {peak / 1e6:.0f} | "
                  f"{peak / side**2:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
