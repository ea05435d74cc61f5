"""Checkpoint size and load time of format 2 with a fine-tuned package MiniLM (what the top-k trade costs).

The model is the embedded default's shape (MiniLM + EfficientNet-Lite0, fusion
d=256, 3 fusion + 2 image layers, max_text_len 128). "Fine-tuning" the top k
MiniLM layers is simulated by adding noise to exactly their tensors, so the
partial encoder holds k layers (k=6: all layers; "+emb": also the embeddings).
For each case: ``model.safetensors`` and whole-directory size, and the median
wall time of ``clmlf.model.checkpoint.load`` (rebuilds both package encoders, checks
their digests, overlays the stored tensors).

    .venv/bin/python bench/checkpoint_size.py                  # table on stdout (~2 min on 2 cores)
    .venv/bin/python bench/checkpoint_size.py --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top-layers", type=int, nargs="+", default=[0, 1, 2, 3, 6],
                        help="numbers of top MiniLM layers changed (6 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed loads per case (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from clmlf.model.checkpoint import load
    from clmlf.model.checkpoint_save import save_checkpoint
    from clmlf.model.config import ModelConfig
    from clmlf.model.model import CLMLF

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(fusion_dim=256, max_text_len=128, freeze_text_encoder=False)
    model = CLMLF(config).eval()
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    layers = len(model.text_encoder.backbone.encoder.layer)
    cases = [(k, False) for k in args.top_layers] + [(layers, True)]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print("| MiniLM tensors stored | fusion dtype | model.safetensors MB | checkpoint dir MB | load s (median) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for top, embeddings in cases:
            model.load_state_dict(pristine)
            changed = tuple(f"encoder.layer.{i}." for i in range(layers - top, layers)) + (
                ("embeddings.",) if embeddings else ())
            with torch.no_grad():
                for name, param in model.text_encoder.backbone.named_parameters():
                    if top and name.startswith(changed):
                        param.add_(torch.randn_like(param) * 1e-3)
            for fusion_dtype in ("float32", "float16"):
                out = Path(tmp) / f"top{top}{'e' if embeddings else ''}-{fusion_dtype}"
                save_checkpoint(model, model.text_encoder.tokenizer, out,
                                fusion_dtype=None if fusion_dtype == "float32" else "float16")
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    load(out)
                    times.append(time.perf_counter() - start)
                what = "none" if top == 0 else f"top {top} layer{'s' if top > 1 else ''} fp16"
                what += " + embeddings" if embeddings else ""
                print(f"| {what} | {fusion_dtype} | {(out / 'model.safetensors').stat().st_size / 1e6:.1f} | "
                      f"{dir_mb(out):.1f} | {statistics.median(times):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
