"""Training throughput on the image probe, image-feature cache on and off, interleaved in one process.

One model (the ``probe`` preset: MiniLM frozen with its states cached, EfficientNet-Lite0
frozen, 2 fusion layers, width 256), one batch of ``--batch-size`` real probe posts.
Each timed step is a whole training step as ``clmlf train --no-image-augment`` runs
it: load + decode + resize the JPEGs (``PostDataset``), collate, forward, CE
(+ LBCL), backward, AdamW. The two setups alternate step by step, so load from
other jobs hits both alike; medians over ``--rounds`` are reported:

* ``cache off``: the frozen image encoder runs on every picture (what every epoch
  costs with augmentation, and the first epoch with ``--image-cache``);
* ``cache on``: its feature maps come from ``clmlf.data.image_cache`` (epochs 2+ of
  ``clmlf train --no-image-augment --image-cache``).

``--image-sizes 224,384`` times both setups at each input size (all four interleaved);
the default is the preset's size.

    .venv/bin/python bench/probe_throughput.py --data-root runs/probe --rounds 5 --image-sizes 224,384
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="a folder written by clmlf probe build")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lbcl", action="store_true", help="add the label-based loss (default: CE only, the MLF row)")
    p.add_argument("--image-sizes", default="", metavar="N,N",
                   help="input picture sides to compare, comma-separated (default: the probe preset's)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.data.datasets import load_split
    from clmlf.data.image_cache import ImageFeatureCache
    from clmlf.data.text_cache import TextStateCache
    from clmlf.model.model import CLMLF
    from clmlf.model.preprocess import Preprocessor
    from clmlf.training.config import TrainConfig
    from clmlf.training.objective import TrainingObjective
    from clmlf.training.presets import get_preset
    from clmlf.training.trainer import build_model_config

    torch.set_num_threads(args.threads)
    sizes = [int(v) for v in args.image_sizes.split(",") if v.strip()] or [get_preset("probe").image_size]
    split = load_split(args.data_root, "probe", "train")

    def make_step(image_size: int, image_cache: bool):
        """One model + optimizer; a closure timing one full training step on the batch."""
        cfg = TrainConfig(preset="probe", data_root=args.data_root, out=".", lbcl=args.lbcl, dbcl=False,
                          image_augment=False, image_size=image_size)
        model_config = build_model_config(cfg, split.label_names)
        torch.manual_seed(0)
        model = CLMLF(model_config)
        pre = Preprocessor(model_config, model.text_encoder.tokenizer)
        dataset, collate = PostDataset(split.samples[: args.batch_size], pre), BatchCollator(pre)
        TextStateCache().install(model.text_encoder)
        if image_cache:
            ImageFeatureCache(max_entries=args.batch_size).install(model.image_encoder)
        objective = TrainingObjective(model, cfg).train()
        optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=cfg.lr)

        def step() -> float:
            start = time.perf_counter()
            batch = collate([dataset[i] for i in range(len(dataset))])
            objective(batch)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        step()  # untimed: fills the text cache (and the image cache)
        return step

    steps = {(size, cached): make_step(size, cached) for size in sizes for cached in (False, True)}
    times: dict[tuple[int, bool], list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(step())
    print(f"command: python bench/probe_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}; batch {args.batch_size} "
          f"probe posts, {'CE + LBCL' if args.lbcl else 'CE only'}, medians of {args.rounds} interleaved steps\n")
    print("| input | image features | step (s) | samples/s | vs cache off, same input |")
    print("|---|---|---|---|---|")
    for (size, cached), values in times.items():
        median, base = statistics.median(values), statistics.median(times[(size, False)])
        print(f"| {size} px ({size // 32}x{size // 32} patches) | {'cached' if cached else 'computed'} | {median:.2f} | "
              f"{args.batch_size / median:.1f} | {base / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
