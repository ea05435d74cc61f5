"""Training throughput (samples/s) and peak memory of one optimizer step, by training setup.

Each setup runs in a fresh child process (so its memory high-water mark is its
own) and times ``--steps`` full training steps (forward of both views, CE + LBCL
+ DBCL, backward, AdamW step) after ``--warmup`` untimed ones, on synthetic posts
of ``--text-tokens`` tokens; the median step time gives samples/s.

Setups (embedded encoders: all-MiniLM-L6-v2 frozen + EfficientNet-Lite0 frozen,
fusion width ``--fusion-dim``, 3 fusion + 2 image layers as in the MVSA-Single preset):

* ``text, no cache``: text-only posts, the frozen text encoder runs every step;
* ``text, cached``: text-only posts, text states memoised (clmlf.data.text_cache), the
  default of ``clmlf train`` while the text encoder is frozen;
* ``30% photos, cached``: as above with a photo on 30% of the posts (the
  distractor rate of the embedded default model), image encoder forward included;
* ``all photos, cached``: every post has a photo (the published setting);
* ``all photos, image cache``: as above with the frozen image encoder's feature
  maps memoised too (clmlf.data.image_cache, ``clmlf train --no-image-augment
  --image-cache``): the steady state from the second epoch on, when every
  picture recurs unchanged (no augmentation);
* ``text, CE only``: MLF-only ablation row (no contrastive losses, one view).

CPU peak = ``ru_maxrss`` at the end minus ``ru_maxrss`` after building the model.
CUDA peak = ``torch.cuda.max_memory_allocated``.

    .venv/bin/python bench/train_throughput.py                          # markdown table on stdout
    .venv/bin/python bench/train_throughput.py --device cuda --batch-size 64 --fusion-dim 768
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SETUPS = {
    "text, no cache": {"photo_share": 0.0, "cache": False, "contrastive": True},
    "text, cached": {"photo_share": 0.0, "cache": True, "contrastive": True},
    "30% photos, cached": {"photo_share": 0.3, "cache": True, "contrastive": True},
    "all photos, cached": {"photo_share": 1.0, "cache": True, "contrastive": True},
    "all photos, image cache": {"photo_share": 1.0, "cache": True, "contrastive": True, "image_cache": True},
    "text, CE only, cached": {"photo_share": 0.0, "cache": True, "contrastive": False},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--fusion-dim", type=int, default=256)
    p.add_argument("--text-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per setup (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from clmlf.data.text_cache import TextStateCache
    from clmlf.model.config import ModelConfig
    from clmlf.model.model import CLMLF
    from clmlf.training.config import TrainConfig
    from clmlf.training.objective import TrainingObjective

    setup = SETUPS[args.child]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = ModelConfig(fusion_dim=args.fusion_dim, fusion_layers=3, image_layers=2, freeze_text_encoder=True,
                         max_text_len=128)
    model = CLMLF(config).to(device)
    train_cfg = TrainConfig(preset="mvsa-single", data_root=".", out=".", fusion_dim=args.fusion_dim,
                            lr=1e-4, lbcl=setup["contrastive"], dbcl=setup["contrastive"])
    objective = TrainingObjective(model, train_cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    if setup["cache"]:
        TextStateCache().install(model.text_encoder)
    if setup.get("image_cache"):
        from clmlf.data.image_cache import ImageFeatureCache

        ImageFeatureCache().install(model.image_encoder)  # filled by the untimed warm-up step
    base_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    b, t = args.batch_size, args.text_tokens
    generator = torch.Generator().manual_seed(0)

    def view() -> dict:
        ids = torch.randint(1000, 20000, (b, t), generator=generator)
        ids[:, 0], ids[:, -1] = 101, 102
        present = torch.rand(b, generator=generator) < setup["photo_share"]
        return {"input_ids": ids.to(device), "attention_mask": torch.ones(b, t, dtype=torch.long, device=device),
                "token_type_ids": torch.zeros(b, t, dtype=torch.long, device=device),
                "pixel_values": torch.randn(b, 3, 224, 224, generator=generator).to(device),
                "image_present": present.to(device)}

    batch = {"original": view(), "augmented": view(), "labels": torch.randint(0, 3, (b,), generator=generator).to(device)}
    if setup["cache"]:  # the cache is warm after the first epoch: fill it before timing
        with torch.no_grad():
            for v in ("original", "augmented"):
                model.text_encoder(batch[v]["input_ids"], batch[v]["attention_mask"], batch[v]["token_type_ids"])
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = objective(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - base_rss
    return {"setup": args.child, "step_s": median, "samples_s": b / median, "peak_mb": peak}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    rows = []
    for name in args.setups:
        cmd = [sys.executable, __file__, "--child", name, "--device", args.device, "--batch-size", str(args.batch_size),
               "--fusion-dim", str(args.fusion_dim), "--text-tokens", str(args.text_tokens), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name}: {rows[-1]['samples_s']:.1f} samples/s", file=sys.stderr)
    base = next((r["samples_s"] for r in rows if r["setup"] == "text, no cache"), None)
    memory = "peak CUDA MB" if args.device == "cuda" else "extra peak RSS MB"
    print(f"command: python bench/train_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, device {args.device}; "
          f"batch {args.batch_size}, fusion width {args.fusion_dim}, {args.text_tokens} tokens/post\n")
    print(f"| setup | step (s, median of {args.steps}) | samples/s | vs no cache | {memory} |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['samples_s'] / base:.2f}x" if base else "-"
        print(f"| {r['setup']} | {r['step_s']:.2f} | {r['samples_s']:.1f} | {ratio} | {r['peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
