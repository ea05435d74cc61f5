"""Model forward throughput (posts/s) and peak memory by batch size.

CPU: the embedded encoders (all-MiniLM-L6-v2 + EfficientNet-Lite0, real weights)
with the paper's fusion (d=768, 3 fusion + 2 image layers), float32.
CUDA (when a GPU exists): BERT-base + ResNet-50 shapes with random weights, bf16
autocast, i.e. the paper's model size.

Every batch size runs in a fresh child process so its memory high-water mark is
its own: CPU peak = ``ru_maxrss`` after the timed runs minus ``ru_maxrss`` right
after loading the model (extra resident memory for activations at that batch
size); CUDA peak = ``torch.cuda.max_memory_allocated``. Throughput is the median
over ``--repeats`` timed forward passes after a short warm-up pass; inputs are
synthetic posts of ``--text-tokens`` tokens, each with an image (and, on CPU, a
second column with no images, where the image encoder is skipped).

    .venv/bin/python bench/model_forward.py                      # table on stdout (~2 min on 2 cores)
    .venv/bin/python bench/model_forward.py --update-docs docs/performance.md
    .venv/bin/python bench/model_forward.py --device cuda --batch-sizes 1 8 32 64 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BEGIN = "<!-- model_forward:begin -->"
END = "<!-- model_forward:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU run, plus the CUDA run when a GPU exists")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per batch size (median reported)")
    parser.add_argument("--text-tokens", type=int, default=32, help="tokens per post incl. [CLS]/[SEP]")
    parser.add_argument("--fusion-dim", type=int, default=768, help="fusion width d (paper: 768)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--update-docs", type=Path, help="rewrite the 'Model forward' results block of this file")
    parser.add_argument("--breakdown", type=int, metavar="BATCH",
                        help="instead: count FLOPs per post of each stage of the CPU model at this batch size")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: "device:batch_size"
    return parser.parse_args(argv)


def build_model(device: str, fusion_dim: int = 768):
    """The benchmarked model on ``device`` (eval mode)."""
    import torch

    from clmlf.config import ModelConfig
    from clmlf.model import CLMLF

    if device == "cpu":
        return CLMLF(ModelConfig(fusion_dim=fusion_dim)).eval()
    from transformers import BertConfig, BertModel

    from clmlf.encoders import TextEncoder, _load_tokenizer, create_image_encoder, minilm_dir

    config = ModelConfig(text_encoder="bert-base-uncased", image_encoder="resnet50", fusion_dim=fusion_dim)
    text = TextEncoder(BertModel(BertConfig(), add_pooling_layer=False), _load_tokenizer(minilm_dir()),
                       builtin_weights=False)
    return CLMLF(config, text, create_image_encoder(config)).eval().to(torch.device(device))


def synthetic_batch(batch_size: int, tokens: int, image_size: int, with_images: bool, device: str) -> dict:
    import torch

    gen = torch.Generator().manual_seed(batch_size)
    ids = torch.randint(1000, 30000, (batch_size, tokens), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(batch_size, tokens, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=gen),
        "image_present": torch.full((batch_size,), with_images),
    }
    return {k: v.to(device) for k, v in batch.items()}


def time_forward(model, batch: dict, repeats: int, device: str) -> float:
    """Median seconds of one forward pass, after a warm-up pass on the first (at most 8) posts."""
    import torch

    def once(inputs: dict) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            model(**inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once({key: value[:8] for key, value in batch.items()})
    return statistics.median(once(batch) for _ in range(repeats))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(spec: str, args: argparse.Namespace) -> dict:
    import torch

    device, size = spec.split(":")
    batch_size = int(size)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as clmlf.inference.Predictor does on CPU
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = build_model(device, args.fusion_dim)
    image_size = model.config.image_size
    loaded_rss = rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = {"device": device, "batch_size": batch_size, "model_rss_mib": loaded_rss}
    with_images = time_forward(model, synthetic_batch(batch_size, args.text_tokens, image_size, True, device),
                               args.repeats, device)
    result["seconds"] = with_images
    result["posts_per_s"] = batch_size / with_images
    if device == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mib"] = rss_mib() - loaded_rss
    text_only = time_forward(model, synthetic_batch(batch_size, args.text_tokens, image_size, False, device),
                             args.repeats, device)
    result["text_only_posts_per_s"] = batch_size / text_only
    return result


def breakdown(args: argparse.Namespace) -> str:
    """GFLOPs per post of each stage of the CPU model (torch FlopCounterMode: independent of machine load)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("cpu", args.fusion_dim)
    size = args.breakdown
    batch = synthetic_batch(size, args.text_tokens, model.config.image_size, True, "cpu")

    def flops(fn) -> float:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            fn()
        return counter.get_total_flops() / size / 1e9

    with torch.inference_mode():
        text = model.text_proj(model.text_encoder(batch["input_ids"], batch["attention_mask"]))
        feature_map, pooled = model.image_encoder(batch["pixel_values"])
        patches = feature_map.permute(0, 2, 3, 1).flatten(1, 2)
        tokens = torch.cat([model.global_proj(pooled).unsqueeze(1), model.patch_proj(patches)], dim=1)
        image = model.image_transformer(tokens)[0]
        keep = torch.ones(size, text.shape[1] + image.shape[1], dtype=torch.bool)
    stages = {
        "text encoder (MiniLM) + projection": lambda: model.text_proj(
            model.text_encoder(batch["input_ids"], batch["attention_mask"])),
        "image encoder (EfficientNet-Lite0)": lambda: model.image_encoder(batch["pixel_values"]),
        "image projections + image transformer": lambda: model.image_transformer(
            torch.cat([model.global_proj(pooled).unsqueeze(1), model.patch_proj(patches)], dim=1)),
        "fusion transformer + pooling + classifier": lambda: model.classifier(
            model.pooling(model.fusion_transformer(torch.cat([text, image], 1), keep)[0], keep)),
        "whole forward": lambda: model(**batch),
    }
    counted = {name: flops(fn) for name, fn in stages.items()}
    rows = ["| stage | GFLOPs per post | share |", "|---|---:|---:|"]
    rows += [f"| {name} | {value:.2f} | {value / counted['whole forward']:.0%} |" for name, value in counted.items()]
    return (f"FLOPs by stage (d={args.fusion_dim}, {args.text_tokens} text tokens, 50 image tokens, "
            f"224 px image; counted by torch.utils.flop_counter):\n\n" + "\n".join(rows))


def run_all(args: argparse.Namespace) -> list[dict]:
    import torch
    from tqdm import tqdm

    devices = ["cpu"] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    specs = [f"{d}:{b}" for d in devices for b in args.batch_sizes]
    results = []
    for spec in tqdm(specs, desc="model_forward", unit="run", file=sys.stderr):
        cmd = [sys.executable, __file__, "--child", spec, "--repeats", str(args.repeats),
               "--text-tokens", str(args.text_tokens), "--threads", str(args.threads),
               "--fusion-dim", str(args.fusion_dim)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"benchmark child {spec} failed: {out.stderr.strip().splitlines()[-1:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def machine() -> str:
    import torch

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        wanted = ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket")
        cpu = "; ".join(" ".join(line.split()) for line in lscpu if line.split(":")[0] in wanted)
    except (OSError, subprocess.CalledProcessError):
        cpu = platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{cpu}; GPU: {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def table(results: list[dict]) -> str:
    rows = [
        "| device | model | batch | posts/s (text+image) | ms/batch | posts/s (text only) | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        model = "MiniLM + EffNet-Lite0, fp32" if r["device"] == "cpu" else "BERT-base + ResNet-50, bf16"
        rows.append(
            f"| {r['device']} | {model} | {r['batch_size']} | {r['posts_per_s']:.1f} | {1000 * r['seconds']:.0f} "
            f"| {r['text_only_posts_per_s']:.1f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(rows)


def update_docs(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Performance\n"
    section = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## Model forward\n\n{section}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    if args.breakdown:
        print(breakdown(args))
        return 0
    started = time.time()
    load_before = os.getloadavg()[0]
    results = run_all(args)
    command = "python bench/model_forward.py " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "python bench/model_forward.py"
    block = (
        f"Command: `{command}` ({time.time() - started:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"Machine: {machine()}; torch threads: {args.threads}; 1-min load average at start "
        f"{load_before:.1f}, at end {os.getloadavg()[0]:.1f} (other jobs shared the cores)\n\n"
        f"Fusion width d={args.fusion_dim}. Synthetic posts of {args.text_tokens} tokens with one image each (text-only column: a batch "
        f"without images, so the image encoder and image transformer are skipped). Median of {args.repeats} forward passes after a warm-up pass on up to 8 posts. CPU peak memory: "
        "ru_maxrss increase over the process's RSS after model load (fresh process per batch size); "
        "CUDA: torch.cuda.max_memory_allocated.\n\n" + table(results)
    )
    print(block)
    if args.update_docs:
        update_docs(args.update_docs, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
