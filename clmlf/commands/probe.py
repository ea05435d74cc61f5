"""``clmlf probe {build,attention,glyphs,disagree}``: the image-sentiment probe data set and what a model does with it."""

from __future__ import annotations

import argparse
import json

from clmlf.settings import OneLineArgumentParser, env_default, setup_logging

EPILOG = """\
examples:
  # write the probe (3,000 posts: train/dev with the 35 "core" glyphs, test with 6 held-out glyphs)
  clmlf probe build --out data/probe
  clmlf probe build --out /tmp/probe-small --size 300 --seed 1
  clmlf probe build --out data/probe-wide --size 12000 --glyphs wide   # 67 training glyphs

  # train on it (the image carries the label; the text is label-free), then score the held-out glyphs
  clmlf train --preset probe --data-root data/probe --out runs/probe --no-image-augment --image-cache
  clmlf evaluate --checkpoint runs/probe/best --data-root data/probe --dataset probe --split test

  # where do the text tokens look? share of attention on the face patches vs uniform, over dev
  clmlf probe attention --checkpoint runs/probe/best --data-root data/probe
  # which faces does it get wrong, and what does it read them as? (test = the held-out glyphs)
  clmlf probe glyphs --checkpoint runs/probe/best --data-root data/probe --split test
  # text and face disagree: which one does the prediction follow?
  clmlf probe disagree --checkpoint runs/probe/best --data-root data/probe

The faces come from Debian's fonts-noto-color-emoji (apt-get install fonts-noto-color-emoji);
the same --seed, --size and --glyphs give byte-identical files. Layout and splits: docs/training.md.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="build the image-sentiment probe and measure a model on it",
        description="The image-sentiment probe: emoji faces on photo, gradient and noise backgrounds with "
        "label-free text, so only the image carries the label.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=OneLineArgumentParser)
    sub.required = True

    build = sub.add_parser("build", help="write the probe data set (CLMLF release layout, dataset 'probe')",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--out", required=True, metavar="DIR", help="folder to write (created; files replaced)")
    build.add_argument("--size", type=int, default=3000, metavar="N",
                       help="posts in all (70%% train, 15%% dev, 15%% test; default 3000, at least 30)")
    build.add_argument("--seed", type=int, default=0, metavar="S", help="seed of every random choice (default 0)")
    build.add_argument("--glyphs", default=None, choices=("core", "wide"),
                       help="training glyph set: core (35 faces, default) or wide (67); the held-out test glyphs "
                            "are the same 6 either way")
    build.add_argument("--font", metavar="FILE", help="NotoColorEmoji.ttf (default: found in /usr/share/fonts)")

    for name, text in (("attention", "share of text-token attention on the face patches vs uniform"),
                       ("glyphs", "accuracy per face glyph and what each is mistaken for"),
                       ("disagree", "which modality wins when text and face disagree")):
        sp = sub.add_parser(name, help=text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--checkpoint", default=env_default("CLMLF_CHECKPOINT"),
                        help="checkpoint directory (default: embedded model; env CLMLF_CHECKPOINT)")
        sp.add_argument("--data-root", default=env_default("CLMLF_DATA_ROOT"), metavar="DIR",
                        help="a folder written by clmlf probe build (env CLMLF_DATA_ROOT)")
        sp.add_argument("--split", default="dev", choices=("train", "dev", "test"))
        sp.add_argument("--batch-size", type=int, default=32, metavar="N")
        sp.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
        sp.add_argument("--device", default=env_default("CLMLF_DEVICE", "auto"), choices=("auto", "cpu", "cuda"))
        sp.add_argument("--json", action="store_true", help="print the result as one JSON line")
    for sp in (build, *(sub.choices[n] for n in ("attention", "glyphs", "disagree"))):
        sp.add_argument("--log-level", default=env_default("LOG_LEVEL", "WARNING"))
        sp.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    setup_logging(args.log_level)
    from clmlf.data.probe import ProbeError

    try:
        if args.action == "build":
            return _build(args)
        return _analyse(args, parser)
    except ProbeError as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clmlf.data.probe import DEFAULT_GLYPHS, ProbeConfig, build_probe

    config = ProbeConfig(out=Path(args.out), size=args.size, seed=args.seed, glyphs=args.glyphs or DEFAULT_GLYPHS,
                         font=Path(args.font) if args.font else None)
    sizes = build_probe(config)
    print(f"{args.out}: probe with {sum(sizes.values())} posts ({', '.join(f'{k} {v}' for k, v in sizes.items())}); "
          f"train with: clmlf train --preset probe --data-root {args.out} --out runs/probe")
    return 0


def _analyse(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.data_root:
        parser.error("--data-root is required (or set CLMLF_DATA_ROOT)")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    import torch

    from clmlf.data.datasets import DataFormatError
    from clmlf.evaluation.probe_analysis import (
        disagreement_table,
        face_attention_share,
        format_attention,
        format_disagreement,
        format_glyphs,
        glyph_accuracy,
    )
    from clmlf.model.checkpoint import CheckpointError, load
    from clmlf.model.encoders import EncoderError
    from clmlf.serving.inference import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        path = args.checkpoint
        if path is None:
            from clmlf.model.default_model import default_checkpoint_dir

            path = default_checkpoint_dir()
        loaded = load(path)
        device = resolve_device(args.device)
        if args.action == "attention":
            result = face_attention_share(loaded, args.data_root, args.split, batch_size=args.batch_size, device=device)
            text = format_attention(result, loaded.name)
        elif args.action == "glyphs":
            result = glyph_accuracy(loaded, args.data_root, args.split, batch_size=args.batch_size, device=device)
            text = format_glyphs(result, loaded.name)
        else:
            result = disagreement_table(loaded, args.data_root, args.split, batch_size=args.batch_size, device=device)
            text = format_disagreement(result, loaded.name)
    except (CheckpointError, DataFormatError, EncoderError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    print(json.dumps(result) if args.json else text)
    return 0
