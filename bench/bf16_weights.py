"""bf16 serving: Linear layers cast to bf16 once at start-up against bf16 autocast over fp32 weights.

Under bf16 autocast every ``nn.Linear`` call casts its fp32 weight and bias to bf16 (once per
forward: autocast caches the cast until the context exits). ``--precision bf16`` now casts the
Linear parameters once in ``PrecisionPlan.prepare`` instead, which gives bit-identical logits
(checked here on every batch) and halves those weights' memory. What it saves per forward is a
read of the fp32 weights and a write of bf16 copies, a fixed cost that matters most for small
batches (the stream at low traffic flushes by age, not by size).

Variants, timed in interleaved rounds on the same batches (each in turn, every round):

* ``autocast``: bf16 autocast over the fp32 model (bf16 serving before this change);
* ``cast-once``: the model as ``--precision bf16`` prepares it now.

The texts are the MVSA dev texts (token-sorted batches, as the predictor cuts them), the model
the embedded default (or ``--checkpoint``), text only. Reported per batch size: posts/s of each
(median of rounds), the speed-up, whether every logit is identical, and the Linear weights' bytes.

    .venv/bin/python bench/bf16_weights.py                          # about 2 min on 2 cores
    .venv/bin/python bench/bf16_weights.py --batch-sizes 1 4 16 64 --rounds 7
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=Path,
                        default=Path("../shared/data/clmlf-reference/MVSA-single/10-flod-1/dev.json"),
                        help="a split JSON of the release layout (default %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="first N texts (0 = all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[4, 16, 64], help="default 4 16 64")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint instead of the embedded default model")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def linear_bytes(model) -> int:
    from torch import nn

    return sum(p.numel() * p.element_size() for m in model.modules() if isinstance(m, nn.Linear)
               for p in m.parameters())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from bench_output import emit_results

    from clmlf.model.checkpoint import load
    from clmlf.model.default_model import default_checkpoint_dir
    from clmlf.serving.precision import PrecisionPlan

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    loaded = load(args.checkpoint or default_checkpoint_dir())
    texts = [row["text"] for row in json.loads(args.texts.read_text(encoding="utf-8"))]
    texts = texts[: args.limit] if args.limit else texts
    plan = PrecisionPlan("bf16", "bf16", "cpu", "bench")
    models = {"autocast": copy.deepcopy(loaded.model).eval(), "cast-once": plan.prepare(loaded.model.eval())}
    pre = loaded.preprocessor
    tokens = pre.encode(texts)
    order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
    results: dict = {"command": "python bench/bf16_weights.py " + shlex.join(argv or sys.argv[1:]),
                     "cpu": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
                     "model": loaded.name, "texts": len(texts), "load_average_start": round(os.getloadavg()[0], 1),
                     "linear_bytes": {name: linear_bytes(m) for name, m in models.items()}, "batch_sizes": {}}

    @torch.inference_mode()
    def run(model, batches) -> torch.Tensor:
        with plan.autocast():
            return torch.cat([model(**batch).logits.float() for batch in batches])

    for size in args.batch_sizes:
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batch = pre.collate([texts[i] for i in chunk], [None] * len(chunk), tokens=[tokens[i] for i in chunk])
            batch["pixel_values"] = None  # text only: the image path is skipped, as the predictor does
            batches.append(batch)
        outputs = {name: run(model, batches) for name, model in models.items()}  # also the warm-up
        timings: dict[str, list[float]] = {name: [] for name in models}
        for round_no in range(args.rounds):
            say(f"batch {size}: round {round_no + 1}/{args.rounds}")
            for name, model in models.items():
                start = time.perf_counter()
                run(model, batches)
                timings[name].append(time.perf_counter() - start)
        rates = {name: len(texts) / statistics.median(t) for name, t in timings.items()}
        results["batch_sizes"][str(size)] = {
            "posts_per_s": {name: round(r, 1) for name, r in rates.items()},
            "speedup": round(rates["cast-once"] / rates["autocast"], 3),
            "rounds_s": {name: [round(x, 3) for x in t] for name, t in timings.items()},
            "identical_logits": bool(torch.equal(outputs["autocast"], outputs["cast-once"])),
        }
    return emit_results(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
