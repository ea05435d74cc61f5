"""Text-only batches: skipping the pixel block vs building it (the serving path before 2026-12-03).

A batch without any image (every batch of a text-only model such as the embedded default) used to
carry a [B, 3, 224, 224] block of zeros through collate, a channels-last copy and the device move,
although the model never reads it. ``skip`` is today's ``Predictor.probabilities``; ``zeros`` does
the same with the old full zero block and its channels-last copy. Rounds alternate the two on the
same posts; medians of per-round medians, and the ratio within each round.

    .venv/bin/python bench/pixel_skip.py --rounds 5 --precision auto
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per variant and round (median)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (default auto)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from clmlf.serving.inference import InferenceItem, Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(None, device="cpu", batch_size=args.batch, precision=args.precision)
    pre, plan = predictor.preprocessor, predictor.precision
    size = pre.config.image_size
    texts = [f"the new phone was really great {i} " * (1 + i % 5) for i in range(args.batch)]
    items = [InferenceItem(text) for text in texts]

    @torch.inference_mode()
    def with_zeros() -> torch.Tensor:
        batch = pre.collate(texts, [None] * len(texts))
        batch["pixel_values"] = plan.pixels(torch.zeros(len(texts), 3, size, size))
        with plan.autocast():
            return predictor.model(**batch).logits.float().softmax(-1)

    variants = {"skip": lambda: predictor.probabilities(items), "zeros": with_zeros}
    same = torch.equal(variants["skip"](), variants["zeros"]())
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            runs = []
            for _ in range(args.batches):
                start = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - start)
            timings[name].append(statistics.median(runs))
    ratios = [z / s for s, z in zip(timings["skip"], timings["zeros"], strict=True)]
    result = {
        "precision": plan.mode, "batch": args.batch, "threads": args.threads, "identical_scores": same,
        "ms_per_batch": {name: round(statistics.median(t) * 1000, 2) for name, t in timings.items()},
        "speedup_skip_vs_zeros": round(statistics.median(ratios), 3), "per_round": [round(r, 3) for r in ratios],
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
