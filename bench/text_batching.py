"""Batching real posts by token count against batching them by characters, on the predict path.

Each text of a batch is padded to the batch's longest, so what a batch costs is its size times
its longest token count. Social-media text breaks the link between characters and tokens (a
22-character ``t.co`` URL is 17 word pieces for MiniLM, a run of emoji one ``[UNK]``, a hashtag
splits into pieces), so sorting posts by characters before cutting batches, as the predictor
did before, pads far more than sorting by the tokens themselves.

Variants (``--variants ORDER@BATCH ...``), timed in interleaved rounds on the same posts (each
variant in turn, every round); the first is the reference of speed-ups and agreement:

* ``chars@N``: the previous predictor (posts sorted by characters, each batch of N tokenized and padded);
* ``tokens@N``: the predictor now (texts encoded once, sorted by token count, each batch of N padded).

Each may end in ``:PRECISION`` for its own serving precision (``today`` = fp32 with the image encoder
NCHW, the path before precision modes; ``auto``, ``fp32``, ``bf16``, ``int8``), else ``--precision``:
``chars@16:today`` is the bare predict path as it was when the CPU-speed issue was filed.

Both run the whole ``clmlf predict`` path (``clmlf.commands.predict.predict_stream``: parse,
images, batches, result records) on the MVSA dev texts as JSONL posts, with the embedded
default model (or ``--checkpoint``) in the serving precision ``--precision`` (auto: what the
service picks on this machine). Reported per data set: posts/s (median of rounds) and the
speed-up, the padded tokens per real token, and label agreement and the largest probability
change between the two (padding does not change a text's own tokens, so labels should agree).

    .venv/bin/python bench/text_batching.py                                  # about 3 min on 2 cores
    .venv/bin/python bench/text_batching.py --variants chars@32 tokens@32 tokens@64 --rounds 5 --limit 600
    .venv/bin/python bench/text_batching.py --variants chars@16:today tokens@16:today tokens@64:auto
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATASETS = {"mvsa-single": "MVSA-single", "mvsa-multiple": "MVSA-multiple"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/clmlf-reference"),
                        help="the release layout with MVSA-single/ and MVSA-multiple/ (default %(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--split", default="dev", help="which split's texts (default dev)")
    parser.add_argument("--limit", type=int, default=0, help="first N texts of each split (0 = all)")
    parser.add_argument("--variants", nargs="+", type=_variant, default=["chars@64", "tokens@64"],
                        metavar="ORDER@BATCH[:PRECISION]",
                        help="chars@N or tokens@N, optionally :PRECISION, timed interleaved (default chars@64 tokens@64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument("--precision", default="auto", help="serving precision of variants without :PRECISION "
                                                            "(default auto)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint instead of the embedded default model")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


PRECISION_NAMES = ("today", "auto", "fp32", "bf16", "int8")


def _variant(text: str) -> str:
    spec, colon, precision = text.partition(":")
    order, _, batch = spec.partition("@")
    if (order not in ("chars", "tokens") or not (batch.isdigit() and int(batch) > 0)
            or (colon and precision not in PRECISION_NAMES)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected chars@N or tokens@N (N >= 1), optionally "
                                         f":{'|'.join(PRECISION_NAMES)}")
    return text


def load_predictor(checkpoint: str | None, precision: str):
    """A Predictor in ``precision`` (``today``: fp32 with the image encoder NCHW)."""
    from today import today_plan

    from clmlf.serving.inference import Predictor

    if precision == "today":
        precision = today_plan()
    return Predictor.from_checkpoint(checkpoint, device="cpu", precision=precision)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def char_order_predictor(base):
    """The predictor as it was: items sorted by characters, each batch tokenized on its own."""
    from clmlf.serving.inference import Prediction

    class CharOrder(type(base)):
        def predict(self, items, batch_size=None, on_batch=None):
            size = batch_size or self.batch_size
            order = sorted(range(len(items)), key=lambda i: len(items[i].text))
            results = [None] * len(items)
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                probabilities = self.probabilities([items[i] for i in chunk])
                for row, index in enumerate(chunk):
                    scores = {label: float(p) for label, p in zip(self.labels, probabilities[row], strict=True)}
                    results[index] = Prediction(label=self.labels[int(probabilities[row].argmax())], scores=scores)
                if on_batch is not None:
                    on_batch(len(chunk))
            return results

    clone = CharOrder.__new__(CharOrder)
    clone.__dict__.update(base.__dict__)  # same model object, same settings
    return clone


def padding_ratio(lengths: list[int], batch_size: int, key, chunk_lines: int) -> float:
    """Padded tokens per real token when the predict path sorts each chunk of lines by ``key`` and cuts batches."""
    padded = 0
    for first in range(0, len(lengths), chunk_lines):
        order = sorted(range(first, min(first + chunk_lines, len(lengths))), key=key)
        padded += sum(max(lengths[i] for i in order[s : s + batch_size]) * len(order[s : s + batch_size])
                      for s in range(0, len(order), batch_size))
    return padded / sum(lengths)


def path_chunk_lines(predictor) -> int:
    """Lines the predict path sorts together for this predictor's model."""
    from clmlf.commands.predict import CHUNK_LINES, TEXT_ONLY_CHUNK_LINES

    return CHUNK_LINES if predictor.preprocessor.config.trained_with_images else TEXT_ONLY_CHUNK_LINES


def run_path(predictor, lines: bytes) -> tuple[float, list[dict]]:
    from concurrent.futures import ThreadPoolExecutor

    from clmlf.commands.predict import IMAGE_WORKERS, predict_stream
    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher

    sink = io.StringIO()
    with ImageFetcher(FetchConfig()) as fetcher, ThreadPoolExecutor(max_workers=IMAGE_WORKERS) as pool:
        start = time.perf_counter()
        predict_stream(io.BytesIO(lines), sink, predictor, fetcher, pool, progress=False)
        elapsed = time.perf_counter() - start
    return elapsed, [json.loads(line) for line in sink.getvalue().splitlines()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from bench_output import emit_results

    torch.set_num_threads(args.threads)
    results: dict = {"command": "python bench/text_batching.py " + shlex.join(argv or sys.argv[1:]),
                     "load_average_start": round(os.getloadavg()[0], 1), "runs": []}
    by_precision: dict[str, object] = {}  # one Predictor (model) per precision (bf16 casts its model's layers in place)
    variants = {}
    for spec in args.variants:
        order, _, batch = spec.partition(":")[0].partition("@")
        precision = spec.partition(":")[2] or args.precision
        if precision not in by_precision:
            by_precision[precision] = load_predictor(args.checkpoint, precision)
        base = by_precision[precision]
        predictor = char_order_predictor(base) if order == "chars" else copy.copy(base)
        predictor.batch_size = int(batch)
        variants[spec] = predictor
    base = next(iter(variants.values()))
    results["precision"] = {name: p.precision.mode for name, p in variants.items()}
    results["model"] = base.model_name
    first = args.variants[0]
    for dataset in args.datasets:
        folder = args.data_root / DATASETS[dataset] / "10-flod-1"
        rows = json.loads((folder / f"{args.split}.json").read_text(encoding="utf-8"))
        texts = [row["text"] for row in rows][: args.limit or None]
        lines = b"".join(json.dumps({"id": str(i), "text": t, "topics": ["bench"]}).encode() + b"\n"
                         for i, t in enumerate(texts))
        lengths = [len(t) for t in base.preprocessor.encode(texts)]
        chars = [len(t) for t in texts]
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        records: dict[str, list[dict]] = {}
        for predictor in by_precision.values():
            run_path(predictor, lines[: lines.index(b"\n", 2000) + 1])  # warm-up
        for round_no in range(args.rounds):
            for name, predictor in variants.items():
                elapsed, records[name] = run_path(predictor, lines)
                seconds[name].append(elapsed)
                say(f"{dataset} round {round_no + 1}/{args.rounds} {name}: {len(texts) / elapsed:.1f} posts/s")
        rate = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
        run: dict = {"dataset": dataset, "posts": len(texts), "mean_tokens": round(sum(lengths) / len(lengths), 1),
                     "variants": {}}
        for name, predictor in variants.items():
            same = sum(a["label"] == b["label"] for a, b in zip(records[first], records[name], strict=True))
            change = max(abs(a["scores"][k] - b["scores"][k])
                         for a, b in zip(records[first], records[name], strict=True) for k in a["scores"])
            key = chars if name.startswith("chars") else lengths
            run["variants"][name] = {
                "padded_per_real_token": round(padding_ratio(lengths, predictor.batch_size, key.__getitem__,
                                                             path_chunk_lines(predictor)), 3),
                "posts_per_s": round(rate[name], 1),
                "rounds_s": [round(x, 2) for x in seconds[name]],
                "speedup_vs_first": round(rate[name] / rate[first], 2),
                "label_agreement_vs_first": round(same / len(texts), 4),
                "max_score_change_vs_first": round(change, 5),
            }
        results["runs"].append(run)
    return emit_results(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
