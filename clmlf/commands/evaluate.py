"""``clmlf evaluate``: accuracy, weighted / macro F1, per-class scores and confusion of a checkpoint on a split."""

from __future__ import annotations

import argparse
import json
import sys

from clmlf.settings import add_precision_arguments, env_default, setup_logging

DATASET_NAMES = ("mvsa-single", "mvsa-multiple", "hfm", "twitter15", "twitter17", "probe")

EPILOG = """\
examples:
  clmlf evaluate --data-root data --dataset mvsa-single --split dev            # embedded default model
  clmlf evaluate --checkpoint runs/mvsa/best --data-root data --dataset mvsa-single --split test --json
  # robustness: attach an unrelated photo to every post that has none
  clmlf evaluate --data-root data --dataset mvsa-single --split dev --attach-photos --json
  # agreement gate: may bf16 serve this checkpoint? (exit 1 when below the 99.5 % bar)
  clmlf evaluate --data-root data --dataset mvsa-single --split dev --compare-precision bf16 --json

With --json the last line of stdout is one JSON object:
  {"accuracy", "f1_weighted", "f1_macro", "n", "per_class": {label: {"precision", "recall",
   "f1", "support"}}, "confusion": [[...]]}   (confusion[gold][predicted], label-id order)
With --compare-precision MODE it is instead
  {"reference": "fp32", "precision": MODE, "n", "label_agreement", "labels_changed",
   "max_probability_change", "mean_probability_change", "bar": 0.995, "passes",
   "accuracy": {"fp32": .., MODE: ..}}
Environment: CLMLF_CHECKPOINT, CLMLF_DATA_ROOT, CLMLF_DEVICE, CLMLF_PRECISION, CLMLF_THREADS.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on a dataset split",
        description="Evaluate a checkpoint (default: the embedded model) on one split of a benchmark dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", metavar="DIR", default=env_default("CLMLF_CHECKPOINT"),
                   help="checkpoint directory (default: embedded model; env CLMLF_CHECKPOINT)")
    p.add_argument("--data-root", metavar="DIR", default=env_default("CLMLF_DATA_ROOT"), help="dataset folder (env CLMLF_DATA_ROOT)")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    p.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    p.add_argument("--batch-size", type=int, metavar="N", default=64)
    p.add_argument("--device", default=env_default("CLMLF_DEVICE", "auto"), choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-images", action="store_true", help="ignore the dataset's images (text only)")
    p.add_argument("--attach-photos", action="store_true",
                   help="attach a label-free photo (held-out pool) to every post without an image")
    p.add_argument("--photo-seed", type=int, metavar="N", default=0, help="seed of the attached photos")
    add_precision_arguments(p)
    p.add_argument("--compare-precision", metavar="MODE", choices=("bf16", "int8"),
                   help="instead of metrics: label agreement and probability change of MODE against fp32 "
                        "on this split (the gate a mode must pass before it serves by default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-level", metavar="LEVEL", default=env_default("LOG_LEVEL", "WARNING"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    setup_logging(args.log_level)
    if not args.data_root:
        parser.error("--data-root is required (or set CLMLF_DATA_ROOT)")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    from clmlf.data.datasets import DataFormatError
    from clmlf.evaluation.metrics import classification_metrics, format_report, precision_agreement
    from clmlf.model.checkpoint import CheckpointError
    from clmlf.model.encoders import EncoderError
    from clmlf.serving.cpu_threads import configure_threads

    configure_threads(args.threads)
    precisions = ("fp32", args.compare_precision) if args.compare_precision else (args.precision,)
    try:
        result = evaluate_split(
            args.checkpoint, args.data_root, args.dataset, args.split, batch_size=args.batch_size,
            device=args.device, use_images=not args.no_images, attach_photos=args.attach_photos,
            photo_seed=args.photo_seed, progress=not args.no_progress, precisions=precisions,
        )
    except (CheckpointError, DataFormatError, EncoderError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    if args.compare_precision:
        (ref_mode, reference), (mode, other) = result["probabilities"].items()
        report = {"reference": ref_mode, "precision": mode,
                  **precision_agreement(reference.numpy(), other.numpy())}
        report["accuracy"] = {
            name: classification_metrics(result["gold"], probs.argmax(-1).tolist(), result["labels"])["accuracy"]
            for name, probs in result["probabilities"].items()
        }
        if args.json:
            print(json.dumps(report))
        else:
            print(format_agreement(report, f"{result['model']} on {args.dataset}/{args.split}"))
        sys.stdout.flush()
        return 0 if report["passes"] else 1
    metrics = classification_metrics(result["gold"], result["predicted"], result["labels"])
    if args.json:
        print(json.dumps(metrics))
    else:
        title = f"{result['model']} on {args.dataset}/{args.split}" + (" (photos attached)" if args.attach_photos else "")
        print(format_report(metrics, result["labels"], title))
    sys.stdout.flush()
    return 0


def evaluate_split(
    checkpoint: str | None,
    data_root: str,
    dataset: str,
    split: str,
    *,
    batch_size: int = 64,
    device: str = "auto",
    use_images: bool = True,
    attach_photos: bool = False,
    photo_seed: int = 0,
    progress: bool = False,
    precisions: tuple[str, ...] = ("auto",),
) -> dict:
    """Predictions of a checkpoint on a split: ``{"gold", "predicted", "labels", "model", "stats",
    "probabilities"}``; ``probabilities`` maps each resolved precision of ``precisions`` (run in that
    order on the same posts) to its softmax scores [N, C]; ``predicted`` comes from the first."""
    import copy
    import logging

    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.data.datasets import load_split
    from clmlf.data.distractors import distractor_images
    from clmlf.evaluation.predictions import predict_dataset
    from clmlf.model.checkpoint import load
    from clmlf.serving.inference import resolve_device
    from clmlf.serving.precision import resolve_precision

    if checkpoint is None:
        from clmlf.model.default_model import default_checkpoint_dir

        checkpoint = default_checkpoint_dir()
    loaded = load(checkpoint)
    data = load_split(data_root, dataset, split, probe_images=use_images)
    stats = data.stats
    # Once per run, visible at the default log level when posts lost their image (REFERENCE.md section 7).
    level = logging.WARNING if use_images and (stats.missing_images or stats.unreadable_images) else logging.INFO
    logging.getLogger("clmlf.evaluate").log(level, stats.summary(f"{dataset}/{split}"))
    if len(data.label_names) != loaded.config.num_labels:
        raise ValueError(
            f"{dataset} has {len(data.label_names)} classes but the checkpoint has {loaded.config.num_labels} "
            f"({', '.join(loaded.config.labels)})"
        )
    target = resolve_device(device)
    plans = [resolve_precision(name, target) for name in precisions]
    model = loaded.model.to(target).eval()
    photos = []
    if attach_photos:
        from clmlf.data.image_cache import ImageFeatureCache

        photos = list(distractor_images(64, pool="eval", seed=photo_seed, size=loaded.config.resize))
        if loaded.config.freeze_image_encoder:
            ImageFeatureCache(max_entries=len(photos)).install(model.image_encoder)
    dataset_obj = PostDataset(data.samples, loaded.preprocessor, use_images=use_images, distractors=photos,
                              distractor_rate=1.0 if attach_photos else 0.0, seed=photo_seed)
    probabilities = {}
    for plan in plans:
        # prepare() may change the model it is given (bf16 casts its Linear layers): each plan gets its own copy.
        prepared = plan.prepare(copy.deepcopy(model) if len(plans) > 1 else model)
        logits, _, gold = predict_dataset(prepared, dataset_obj, BatchCollator(loaded.preprocessor),
                                          batch_size, target, amp=plan.mode == "bf16", progress=progress,
                                          desc=f"{dataset}/{split} {plan.mode}")
        probabilities[plan.mode] = logits.float().softmax(-1)
    first = next(iter(probabilities.values()))
    return {
        "gold": gold.tolist(),
        "predicted": first.argmax(-1).tolist(),
        "probabilities": probabilities,
        "labels": tuple(loaded.config.labels),
        "model": loaded.name,
        "stats": data.stats,
    }


def format_agreement(report: dict, title: str) -> str:
    """The --compare-precision report, readable."""
    verdict = "passes" if report["passes"] else "FAILS"
    accuracy = ", ".join(f"{name} {value:.4f}" for name, value in report["accuracy"].items())
    return "\n".join([
        f"{title}: {report['precision']} against {report['reference']}",
        f"  label agreement        {report['label_agreement']:.2%} ({report['labels_changed']} of {report['n']} "
        f"labels changed): {verdict} the {report['bar']:.1%} bar",
        f"  max probability change {report['max_probability_change']:.4f} "
        f"(mean {report['mean_probability_change']:.4f})",
        f"  accuracy               {accuracy}",
    ])
