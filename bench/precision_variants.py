"""Quick whole-model comparison of serving variants on one realistic batch, in one process, interleaved.

One batch of 16 posts of 4-40 words (the word list of bench/pipeline.py), every third one with a
224x224 image (6 of 16), tokenised by the embedded default model's own preprocessor; the embedded
default model in these variants, each its own copy of the weights:

* ``today``: float32, image encoder NCHW (the serving path before precision modes);
* ``fp32``: float32, image encoder channels_last (``--precision fp32``);
* ``bf16``: bf16 autocast, image encoder channels_last (``--precision bf16``, ``auto`` on a CPU with
  native bf16);
* ``bf16-weights``: every weight cast to bf16 (no autocast), image encoder channels_last (not offered:
  shown because it is the obvious faster alternative and changes labels);
* ``int8``: dynamic int8 ``nn.Linear`` layers, image encoder channels_last (``--precision int8``).

First the label agreement and largest probability change of each variant against ``today`` on
this batch, then ``--rounds`` rounds that time one forward of every variant in turn; medians and
the speed-up against ``today`` of the same rounds. Quicker than bench/model_forward.py (one process,
one batch), for shared machines.

    .venv/bin/python bench/precision_variants.py --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time

WORDS = ("love", "hate", "the", "new", "phone", "coffee", "flight", "was", "really", "great", "awful", "fine",
         "service", "today", "again", "never", "best", "worst", "ok", "meh")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from today import today_plan

    from clmlf.serving.inference import Predictor
    from clmlf.serving.precision import quantize_linear_int8

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    predictor = Predictor.from_checkpoint(None, device="cpu", batch_size=16, precision=today_plan())
    base = predictor.model
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40))) for _ in range(16)]
    images = [torch.randn(3, 224, 224) if i % 3 == 0 else None for i in range(16)]
    batch = predictor.preprocessor.collate(texts, images)

    channels_last = copy.deepcopy(base)
    channels_last.image_encoder.to(memory_format=torch.channels_last)
    bf16_weights = copy.deepcopy(channels_last).to(torch.bfloat16)
    int8 = quantize_linear_int8(channels_last)

    def variant(model, autocast: bool = False, pixels_dtype=None):
        def run():
            inputs = dict(batch)
            if pixels_dtype is not None:
                inputs["pixel_values"] = inputs["pixel_values"].to(pixels_dtype)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model(**inputs).logits.float().softmax(-1)
        return run

    variants = {"today": variant(base), "fp32": variant(channels_last), "bf16": variant(channels_last, True),
                "bf16-weights": variant(bf16_weights, pixels_dtype=torch.bfloat16), "int8": variant(int8)}
    reference = variants["today"]()
    quality = {}
    for name, run in variants.items():
        out = run()
        quality[name] = ((out.argmax(-1) == reference.argmax(-1)).float().mean().item(),
                         (out - reference).abs().max().item())
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base_ms = statistics.median(times["today"])
    print(f"Command: `python bench/precision_variants.py {' '.join(argv or sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); {args.threads} torch threads; 1-min load "
          f"average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print("| variant | ms per batch of 16 (median) | rounds, ms | speed-up vs today | labels as today | max probability change |")
    print("|---|---:|---|---:|---:|---:|")
    for name, values in times.items():
        agree, change = quality[name]
        print(f"| {name} | {1000 * statistics.median(values):.0f} | {', '.join(f'{1000 * v:.0f}' for v in values)} "
              f"| {base_ms / statistics.median(values):.2f}x | {agree:.1%} | {change:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
