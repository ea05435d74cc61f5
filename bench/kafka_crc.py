"""What the consumer loop pays per post to decode a fetched Kafka record batch and check its CRC-32C.

kafka-python checks the CRC-32C of every fetched record batch (``check_crcs``, on by default: it
is how a consumer notices corruption). It uses the C package ``crc32c`` when installed, else a
pure-Python loop over every byte, which is most of a batch's decoding cost and grows with the
post's size: posts with an inline base64 image carry kilobytes. ``crc32c`` is now a core
dependency; this bench shows what it saves.

Posts: MVSA dev texts as the stream's JSON messages; the image variant inlines a real photo (matplotlib's
sample portrait, ``--image-px`` square, JPEG quality 85) as base64. One record batch of ``--batch`` posts per
kind (magic 2, uncompressed, as kafka-python's producer writes them), decoded as the consumer's
fetcher does (iterate the records, read their values) plus ``validate_crc``; C and pure-Python CRC
timed in interleaved rounds; medians reported in microseconds per post.

    .venv/bin/python bench/kafka_crc.py                 # a few seconds
    .venv/bin/python bench/kafka_crc.py --image-px 640 --rounds 9
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path,
                        default=Path("../shared/data/clmlf-reference/MVSA-multiple/10-flod-1/dev.json"),
                        help="a split JSON of the release layout (default %(default)s)")
    parser.add_argument("--batch", type=int, default=500, help="posts per record batch (default 500)")
    parser.add_argument("--image-px", type=int, default=320, help="inline image side in pixels (default 320)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


def record_batch(values: list[bytes]) -> bytes:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=1_700_000_000_000, key=None, value=value, headers=[])
    return bytes(builder.build())


def inline_jpeg(size: int) -> tuple[str, str]:
    """A real photo (matplotlib's sample Grace Hopper portrait) resized to ``size`` square, JPEG
    quality 85, base64: what an inline ``image_b64`` carries; and where the photo came from."""
    import matplotlib
    from PIL import Image

    source = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(source) as photo:
        image = photo.convert("RGB").resize((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return base64.b64encode(out.getvalue()).decode(), source.name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench_output import emit_results
    from kafka.record._crc32c import crc as pure_python
    from kafka.record.default_records import DefaultRecordBatch

    try:
        from crc32c import crc32c as in_c
    except ImportError:
        raise SystemExit("bench/kafka_crc.py: the crc32c package is not installed (pip install crc32c)") from None

    texts = [row["text"] for row in json.loads(args.texts.read_text(encoding="utf-8"))][: args.batch]
    image, photo = inline_jpeg(args.image_px)
    kinds = {
        "text only": [json.dumps({"id": str(i), "text": t, "topics": ["bench"]}).encode() for i, t in enumerate(texts)],
        f"inline {args.image_px}px JPEG": [json.dumps({"id": str(i), "text": t, "topics": ["bench"],
                                                       "image_b64": image}).encode() for i, t in enumerate(texts)],
    }
    crcs = {"C (crc32c)": in_c, "pure Python (fallback)": pure_python}

    def decode(buffer: bytes, crc) -> None:
        batch = DefaultRecordBatch(memoryview(buffer))
        expected = batch.crc
        data = memoryview(buffer)[21:]  # the CRC covers the batch from its attributes field on
        assert crc(data) == expected
        for record in batch:
            record.value  # noqa: B018 - what the fetcher reads

    results: dict = {"command": "python bench/kafka_crc.py " + shlex.join(argv or sys.argv[1:]),
                     "photo": photo, "load_average_start": round(os.getloadavg()[0], 1), "kinds": {}}
    for kind, values in kinds.items():
        buffer = record_batch(values)
        seconds: dict[str, list[float]] = {name: [] for name in crcs}
        for _ in range(args.rounds):
            for name, crc in crcs.items():
                start = time.perf_counter()
                decode(buffer, crc)
                seconds[name].append(time.perf_counter() - start)
        per_post = {name: statistics.median(s) / len(values) * 1e6 for name, s in seconds.items()}
        c_name, py_name = crcs
        results["kinds"][kind] = {
            "bytes_per_post": round(len(buffer) / len(values)),
            "us_per_post": {name: round(v, 2) for name, v in per_post.items()},
            "saved_us_per_post": round(per_post[py_name] - per_post[c_name], 2),
        }
    return emit_results(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
