"""Model forward throughput (posts/s) and peak memory by batch size and serving precision.

CPU: the embedded default model (``--model default``: all-MiniLM-L6-v2 + EfficientNet-Lite0
with its trained fusion) or the paper-sized fusion on the embedded encoders (``--model paper``:
d=768, 3 fusion + 2 image layers, random fusion weights).
CUDA (when a GPU exists): BERT-base + ResNet-50 shapes with random weights, i.e. the paper's
model size.

Precision variants (``--precision``, a column of the table), resolved by clmlf.serving.precision:
``today`` = float32 with the image encoder in NCHW (the serving path before precision modes),
``fp32`` = float32 with the image encoder channels_last, ``bf16`` = bf16 autocast + channels_last,
``int8`` = dynamic int8 Linear layers outside the image encoder + channels_last (CPU only).
All variants of one batch size live in one child process and are timed in interleaved
rounds (today, fp32, bf16, ... then again), so load from other work hits them alike;
medians over ``--repeats`` rounds are reported, and the speed-up is against ``today`` of the
same rounds. Peak memory is per batch size (the child's ``ru_maxrss`` after the timed runs
minus after model load, i.e. the worst variant); CUDA: ``torch.cuda.max_memory_allocated``.

With ``--ceiling`` the child also counts the FLOPs of each batch (torch.utils.flop_counter) and
measures this CPU's fp32 and bf16 GEMM rate (square matmuls, same threads), and the table shows
the GFLOP/s reached and its fraction of the GEMM rate of the variant's number format.

    .venv/bin/python bench/model_forward.py                      # table on stdout
    .venv/bin/python bench/model_forward.py --batch-sizes 16 --repeats 7 --ceiling --update-docs docs/performance.md
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
    parser.add_argument("--model", choices=("default", "paper"), default="default",
                        help="CPU model: the embedded default checkpoint, or the paper-sized random fusion")
    parser.add_argument("--fusion-dim", type=int, default=768, help="fusion width d of --model paper (paper: 768)")
    parser.add_argument("--precision", nargs="+", default=["today", "fp32", "bf16", "int8"],
                        choices=("today", "fp32", "bf16", "int8"), help="variants, timed interleaved")
    parser.add_argument("--ceiling", action="store_true", help="add GFLOP/s and the fraction of the GEMM rate")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--update-docs", type=Path, help="rewrite the 'Model forward' results block of this file")
    parser.add_argument("--breakdown", type=int, metavar="BATCH",
                        help="instead: count FLOPs per post of each stage of the CPU model at this batch size")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: "device:batch_size"
    return parser.parse_args(argv)


def build_model(device: str, fusion_dim: int = 768, which: str = "paper"):
    """The benchmarked model on ``device`` (eval mode)."""
    import torch

    from clmlf.model.config import ModelConfig
    from clmlf.model.model import CLMLF

    if device == "cpu" and which == "default":
        from clmlf.model.checkpoint import load
        from clmlf.model.default_model import default_checkpoint_dir

        return load(default_checkpoint_dir()).model.eval()
    if device == "cpu":
        return CLMLF(ModelConfig(fusion_dim=fusion_dim)).eval()
    from transformers import BertConfig, BertModel

    from clmlf.model.encoders import TextEncoder, _load_tokenizer, create_image_encoder, minilm_dir

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


def variant_plan(name: str, device: str):
    """The PrecisionPlan of a bench variant (``today`` = fp32 with an NCHW image encoder)."""
    import torch
    from today import today_plan

    from clmlf.serving.precision import resolve_precision

    if name == "today":
        if device == "cuda":
            return resolve_precision("auto", torch.device("cuda"))
        return today_plan()
    return resolve_precision(name, torch.device(device))


def variant_models(base, names: list[str], device: str) -> dict:
    """name -> (plan, model); every variant gets its own copy of the weights."""
    import copy

    out = {}
    for name in names:
        plan = variant_plan(name, device)
        out[name] = (plan, plan.prepare(copy.deepcopy(base)))
    return out


def forward_once(plan, model, inputs: dict, device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    batch = dict(inputs, pixel_values=plan.pixels(inputs["pixel_values"]))
    with torch.inference_mode(), plan.autocast():
        model(**batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_interleaved(variants: dict, batch: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per variant; each round runs every variant once, after one warm-up pass each."""
    for plan, model in variants.values():
        forward_once(plan, model, batch, device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (plan, model) in variants.items():
            times[name].append(forward_once(plan, model, batch, device))
    return {name: statistics.median(values) for name, values in times.items()}


def gemm_rate(dtype_name: str, size: int = 1024, repeats: int = 7) -> float:
    """GFLOP/s of a square [size x size] matmul in this dtype (median of ``repeats``, after a warm-up)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    a @ b
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        runs.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(runs) / 1e9


def count_gflops(model, batch: dict) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**batch)
    return counter.get_total_flops() / 1e9


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(spec: str, args: argparse.Namespace) -> dict:
    import torch

    device, size = spec.split(":")
    batch_size = int(size)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as clmlf.serving.inference.Predictor does on CPU
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = build_model(device, args.fusion_dim, args.model)
    names = [n for n in args.precision if device == "cpu" or n in ("today", "fp32", "bf16")]
    variants = variant_models(base, names, device)
    image_size = base.config.image_size
    loaded_rss = rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = synthetic_batch(batch_size, args.text_tokens, image_size, True, device)
    texts = synthetic_batch(batch_size, args.text_tokens, image_size, False, device)
    with_images = time_interleaved(variants, images, args.repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss_mib() - loaded_rss
    text_only = time_interleaved(variants, texts, args.repeats, device)
    result = {"device": device, "batch_size": batch_size, "model_rss_mib": loaded_rss, "peak_mib": peak,
              "model": args.model, "variants": {
                  name: {"mode": variants[name][0].mode, "seconds": with_images[name],
                         "posts_per_s": batch_size / with_images[name],
                         "text_only_posts_per_s": batch_size / text_only[name]} for name in names}}
    if args.ceiling and device == "cpu":
        result["gflops_per_post"] = count_gflops(base, images) / batch_size
        result["gflops_per_post_text_only"] = count_gflops(base, texts) / batch_size
        result["gemm_gflops"] = {"fp32": gemm_rate("fp32"), "bf16": gemm_rate("bf16")}
    return result


def breakdown(args: argparse.Namespace) -> str:
    """GFLOPs per post of each stage of the CPU model (torch FlopCounterMode: independent of machine load)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("cpu", args.fusion_dim, args.model)
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
    return (f"FLOPs by stage (d={model.config.fusion_dim}, {args.text_tokens} text tokens, 50 image tokens, "
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
               "--fusion-dim", str(args.fusion_dim), "--model", args.model, "--precision", *args.precision,
               *(["--ceiling"] if args.ceiling else [])]
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
    ceiling = any("gemm_gflops" in r for r in results)
    head = ("| device | model | batch | precision | posts/s (text+image) | ms/batch | speed-up vs today "
            "| posts/s (text only) | speed-up (text only) | peak memory MiB |")
    rows = [head + (" GFLOP/s reached | fraction of the GEMM rate |" if ceiling else ""),
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ceiling else "")]
    for r in results:
        if r["device"] == "cpu":
            model = "embedded default (MiniLM + EffNet-Lite0)" if r.get("model") == "default" else \
                "MiniLM + EffNet-Lite0, paper fusion"
        else:
            model = "BERT-base + ResNet-50"
        ref = r["variants"].get("today") or next(iter(r["variants"].values()))
        for name, v in r["variants"].items():
            row = (f"| {r['device']} | {model} | {r['batch_size']} | {name} ({v['mode']}) | {v['posts_per_s']:.1f} "
                   f"| {1000 * v['seconds']:.0f} | {v['posts_per_s'] / ref['posts_per_s']:.2f}x "
                   f"| {v['text_only_posts_per_s']:.1f} "
                   f"| {v['text_only_posts_per_s'] / ref['text_only_posts_per_s']:.2f}x | {r['peak_mib']:.0f} |")
            if ceiling and "gemm_gflops" in r:
                reached = v["posts_per_s"] * r["gflops_per_post"]
                rate = r["gemm_gflops"]["bf16" if v["mode"] == "bf16" else "fp32"]
                row += f" {reached:.0f} | {reached / rate:.2f} of {rate:.0f} |"
            rows.append(row)
    notes = []
    for r in results:
        if "gemm_gflops" in r:
            notes.append(f"batch {r['batch_size']}: {r['gflops_per_post']:.2f} GFLOPs per post with an image, "
                         f"{r['gflops_per_post_text_only']:.2f} text only; GEMM rate on these cores "
                         f"fp32 {r['gemm_gflops']['fp32']:.0f} GFLOP/s, bf16 {r['gemm_gflops']['bf16']:.0f} GFLOP/s")
    return "\n".join(rows) + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")


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
        f"Synthetic posts of {args.text_tokens} tokens with one image each (text-only column: a batch "
        f"without images, so the image encoder and image transformer are skipped). Variants timed interleaved, "
        f"median of {args.repeats} rounds after one warm-up pass each; speed-up against `today` of the same rounds. "
        "CPU peak memory: ru_maxrss increase over the process's RSS after model load (fresh process per batch "
        "size, worst variant); CUDA: torch.cuda.max_memory_allocated.\n\n" + table(results)
    )
    print(block)
    if args.update_docs:
        update_docs(args.update_docs, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
