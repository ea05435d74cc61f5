"""``clmlf train``: train CLMLF with a published preset (every value can be overridden by a flag or its
environment variable; the settings class is :class:`clmlf.training.config.TrainConfig`)."""

from __future__ import annotations

import argparse

from clmlf.settings import env_default, setup_logging

PRESET_NAMES = ("default", "mvsa-single", "mvsa-multiple", "hfm", "twitter15", "twitter17", "probe")

EPILOG = """\
examples:
  # the embedded default model: MVSA-Single + MVSA-Multiple train, back-translations as extra samples,
  # 1 epoch fusion-only + 2 epochs with MiniLM's top 5 layers fine-tuned, text only, selected on 10% of train held out
  clmlf train --preset default --data-root data --out runs/default

  # the published MVSA-Single recipe (3 fusion / 2 image layers, batch 32, 20 + 30 epochs)
  clmlf train --preset mvsa-single --data-root data --out runs/mvsa-single

  # a CPU-sized run: frozen text encoder (cached token states), width 256, 6 epochs
  clmlf train --preset mvsa-single --data-root data --out runs/small \\
      --fusion-dim 256 --epochs 6 --stage1-epochs 6 --lr 1e-4 --max-text-len 96

  # ablation: MLF only (no contrastive losses), then the paper's LBCL form
  clmlf train --preset mvsa-single --data-root data --out runs/mlf --no-lbcl --no-dbcl
  clmlf train --preset mvsa-single --data-root data --out runs/paper --lbcl-form paper

  # the image-sentiment probe (clmlf probe build --out probe): frozen image features cached
  clmlf train --preset probe --data-root probe --out runs/probe --no-image-augment --image-cache

  # continue a run that crashed or was stopped with --max-steps
  clmlf train --preset mvsa-single --data-root data --out runs/mvsa-single --resume

  # 4 GPUs, bf16, compiled
  torchrun --nproc-per-node 4 -m clmlf.cli train --preset hfm --data-root data --out runs/hfm --amp --compile

Writes OUT/best and OUT/last (checkpoints for clmlf evaluate / predict --checkpoint),
OUT/metrics.jsonl (one JSON line per epoch), OUT/train_config.json and OUT/resume/.
--data-root is the folder holding MVSA-single/, MVSA-multiple/, HFM/ (CLMLF release
layout) or twitter2015/ + twitter2015_images/ (TomBERT layout).

Environment: every flag but --preset and --out has a variable, CLMLF_TRAIN_ and the flag's
name without --/--no- (--stage1-epochs: CLMLF_TRAIN_STAGE1_EPOCHS=20; --no-text-cache:
CLMLF_TRAIN_TEXT_CACHE=false; --oversample: CLMLF_TRAIN_OVERSAMPLE=DATASET=N,DATASET=N);
--data-root, --device and --log-level read CLMLF_DATA_ROOT, CLMLF_DEVICE and LOG_LEVEL.
A flag given wins over its variable, and either wins over the preset.
"""


def _repeat(text: str) -> tuple[str, int]:
    from clmlf.training.config import parse_repeat

    try:
        return parse_repeat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a benchmark dataset",
        description="Train CLMLF (MLF + label- and data-based contrastive learning) with a published preset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, choices=PRESET_NAMES, help="dataset and published recipe")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder (env CLMLF_DATA_ROOT)")
    p.add_argument("--out", metavar="DIR", required=True, help="run directory")
    enc = p.add_argument_group("model")
    enc.add_argument("--text-encoder", metavar="NAME", help="minilm (embedded), tiny-random-bert, HF name or dir")
    enc.add_argument("--image-encoder", metavar="NAME", help="efficientnet_lite0, resnet50, tiny-cnn")
    enc.add_argument("--image-weights", metavar="FILE", help="weights file for resnet50 (.safetensors or .pth)")
    enc.add_argument("--fusion-dim", type=int, metavar="N", help="fusion width d (preset: 768)")
    enc.add_argument("--fusion-layers", type=int, metavar="N", help="fusion transformer layers (preset per dataset)")
    enc.add_argument("--image-layers", type=int, metavar="N", help="image transformer layers (preset per dataset)")
    enc.add_argument("--pooling", choices=("attention", "mean", "cls", "text"),
                     help="what the classifier reads: attention pooling over all fused tokens (preset), their mean, "
                          "the [CLS] token, or the mean of the text tokens only")
    enc.add_argument("--max-text-len", type=int, metavar="N", help="word pieces kept per text (preset: 200)")
    enc.add_argument("--image-size", type=int, metavar="N", help="input picture side in pixels (preset: 224, probe 384); the image encoder sees N/32 x N/32 patches")
    rec = p.add_argument_group("recipe (defaults from the preset)")
    rec.add_argument("--epochs", type=int, metavar="N", help="total epochs (preset: 50)")
    rec.add_argument("--stage1-epochs", type=int, metavar="N", help="epochs with the text encoder frozen (preset: 20)")
    rec.add_argument("--max-steps", type=int, metavar="N", help="stop after this many optimizer steps (resumable)")
    rec.add_argument("--batch-size", type=int, metavar="N", help="samples per step per process (preset: 32/64/128)")
    rec.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step")
    rec.add_argument("--lr", type=float, metavar="X", help="learning rate of fusion, heads, classifier (preset: 2e-5)")
    rec.add_argument("--text-lr", type=float, metavar="X", help="text encoder learning rate in stage 2 (preset: 2e-5)")
    rec.add_argument("--weight-decay", type=float, metavar="X", help="AdamW weight decay (default 0.01)")
    rec.add_argument("--temperature", type=float, metavar="X", help="contrastive temperature (preset: 0.07)")
    rec.add_argument("--lbcl-weight", type=float, metavar="X", help="weight of the label-based loss (preset: 1.0)")
    rec.add_argument("--dbcl-weight", type=float, metavar="X", help="weight of the data-based loss (preset: 1.0)")
    rec.add_argument("--lbcl", action=argparse.BooleanOptionalAction, default=None,
                     help="label-based contrastive loss on/off (preset: on, off for default)")
    rec.add_argument("--dbcl", action=argparse.BooleanOptionalAction, default=None,
                     help="data-based contrastive loss on/off (preset: on, off for default)")
    rec.add_argument("--lbcl-form", choices=("reference", "paper", "normalized"),
                     help="reference = published code (preset), paper = Algorithm 1, normalized = cosine, "
                          "per-anchor, class-balanced (docs/training.md)")
    rec.add_argument("--dbcl-form", choices=("reference", "normalized"),
                     help="reference = raw dot products (preset), normalized = cosine similarity")
    rec.add_argument("--logit-adjustment", type=float, metavar="X",
                     help="train on logits + X * log(label prior) so rare classes are predicted more (preset: 0)")
    rec.add_argument("--lr-schedule", choices=("constant", "linear"),
                     help="constant (published) or linear: stage 2 warms up over 6%% of its steps, then decays to 0")
    rec.add_argument("--prior-shift", action=argparse.BooleanOptionalAction, default=None,
                     help="after training, fold logits - tau * log(prior) into best/, tau chosen on the held-out "
                          "slice (preset: on for default)")
    rec.add_argument("--holdout-fraction", type=float, metavar="X",
                     help="select OUT/best on this share of train, held out by text (preset: 0 = dev; 0.1 default)")
    rec.add_argument("--translation-view", action=argparse.BooleanOptionalAction, default=None,
                     help="also train on each post's back-translation (preset: off, on for default)")
    rec.add_argument("--oversample", action="append", type=_repeat, metavar="DATASET=N",
                     help="repeat one merged dataset's training posts N times per epoch (repeatable; "
                          "preset: none)")
    rec.add_argument("--text-train-layers", type=int, metavar="N",
                     help="stage 2 trains only the top N text-encoder layers, embeddings frozen (N >= the "
                          "layer count: every layer; preset: all, 5 for default)")
    rec.add_argument("--length-bucketing", action=argparse.BooleanOptionalAction, default=None,
                     help="batch texts of similar length together (less padding; preset: on for default)")
    rec.add_argument("--selection-metric", choices=("accuracy", "f1_weighted", "f1_macro"),
                     help="dev metric that picks OUT/best (preset: weighted F1, macro F1 for HFM/Twitter)")
    rec.add_argument("--seed", type=int, metavar="N",
                     help="seed of initialisation and of the held-out slice (and of order, unless --order-seed)")
    rec.add_argument("--order-seed", type=int, metavar="N",
                     help="seed of data order, dropout and augmentation (default: --seed); runs that differ only "
                          "here share initialisation and held-out slice, so `clmlf soup` can average them")
    rec.add_argument("--resume", action="store_true", default=None, help="continue from OUT/resume")
    rec.add_argument("--distractor-rate", type=float, metavar="X",
                     help="share of image-less training posts given a random label-free photo (default 0; "
                          "not with --no-images)")
    rec.add_argument("--images", dest="use_images", action=argparse.BooleanOptionalAction, default=None,
                     help="--no-images: ignore dataset images: a text-only model (trained_with_images: false) that "
                          "never fetches, decodes or uses an image when it serves (preset: on, off for default)")
    rec.add_argument("--no-image-augment", dest="image_augment", action="store_false", default=None,
                     help="no flip / RandAugment on training images (DBCL's views then differ by text only)")
    rec.add_argument("--augment-copies", type=int, metavar="K",
                     help="K fixed flip/RandAugment versions per training picture, one picked each epoch, so "
                          "--image-cache can hold them all (K x the pictures in memory; default 0: fresh each time)")
    rec.add_argument("--limit-train", type=int, metavar="N", help="use only the first N training samples")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", choices=("auto", "cpu", "cuda"),
                    help="auto = CUDA when present, else CPU (env CLMLF_DEVICE, default auto)")
    rt.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bfloat16 autocast (CUDA, or a CPU with native bf16; preset: on for default)")
    rt.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    rt.add_argument("--workers", type=int, metavar="N",
                    help="data loader processes (default 0)")
    rt.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    rt.add_argument("--no-text-cache", dest="cache_text", action="store_false", default=None, help="do not memoise the frozen text encoder's states")
    rt.add_argument("--image-cache", dest="cache_images", action="store_true", default=None,
                    help="memoise the frozen image encoder's feature maps (with --no-image-augment or --augment-copies)")
    rt.add_argument("--text-cache-file", metavar="FILE", help="read/write the frozen text encoder's states here (reused across runs)")
    rt.add_argument("--eval-batch-size", type=int, metavar="N", help="samples per evaluation batch (default 64)")
    rt.add_argument("--save-every", type=int, metavar="N", help="also write OUT/resume every N steps")
    rt.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    rt.add_argument("--log-level", metavar="LEVEL", default=env_default("LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from clmlf.process_settings import settings_from_args
    from clmlf.training.config import TrainConfig

    setup_logging(args.log_level)
    config = settings_from_args(parser, TrainConfig, args)
    return run_training(config, parser)


def run_training(config, parser: argparse.ArgumentParser) -> int:
    """Run and turn expected failures (bad data, bad encoder, no resume state) into one-line exit 2."""
    import logging
    import os

    from clmlf.data.datasets import DataFormatError
    from clmlf.model.encoders import EncoderError
    from clmlf.training.trainer import train

    try:
        result = train(config)
    except (DataFormatError, EncoderError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    if int(os.environ.get("RANK", "0")) == 0:
        logging.getLogger("clmlf.train").info(
            "done: best dev %s %.4f at epoch %d -> %s", config.selection_metric, result.best_score,
            result.best_epoch, result.out / "best",
        )
    return 0
