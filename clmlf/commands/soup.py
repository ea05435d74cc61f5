"""``clmlf soup``: average the weights of fine-tuned runs of one recipe, chosen greedily on their held-out slice."""

from __future__ import annotations

import argparse
import json
import sys

from clmlf.settings import add_threads_argument, env_default, setup_logging

EPILOG = """\
examples:
  # three runs of the default recipe that share initialisation and held-out slice (vary --order-seed only)
  for s in 0 1 2; do clmlf train --preset default --data-root data --out runs/o$s --order-seed $s; done
  clmlf soup runs/o0/last runs/o1/last runs/o2/last --out runs/soup            # greedy, on the held-out slice
  clmlf soup runs/o0/last runs/o1/last --out runs/soup2 --uniform --json       # plain mean of all
  clmlf evaluate --checkpoint runs/soup --data-root data --dataset mvsa-single --split dev

Each INGREDIENT is a checkpoint directory or a run directory (its best/). The ingredients must share
the training settings that fix initialisation and held-out slice (preset, --seed, --holdout-fraction,
encoders); the held-out slice is rebuilt from the shared train_config (its data root, or --data-root).
Greedy: the best single run on the held-out slice starts the soup; each next-best run joins only if
the held-out score (the run's selection metric) does not drop. Every report of the runs (held-out,
per source, dev splits) is scored for the result and stored in its config.json (extra.soup,
extra.evaluations); dev splits are reported, never used to choose.
With --json the last line of stdout is {"members", "table", "metric", "selected_on", "ingredient_scores",
"evaluations"}.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "soup",
        help="average fine-tuned runs' weights (greedy on the held-out slice)",
        description="Weight-average checkpoints of one recipe that share their initialisation (a model soup): "
                    "one model, the same size and speed as each ingredient.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ingredients", nargs="+", metavar="INGREDIENT", help="checkpoint or run directories (2 or more)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the averaged checkpoint is written")
    p.add_argument("--name", metavar="NAME", help="model name in result records (default: OUT's folder name)")
    p.add_argument("--uniform", action="store_true", help="average every ingredient (no greedy selection)")
    p.add_argument("--data-root", metavar="DIR", default=env_default("CLMLF_DATA_ROOT"),
                   help="dataset folder (default: the runs' own data root; env CLMLF_DATA_ROOT)")
    p.add_argument("--batch-size", type=int, metavar="N", default=64)
    p.add_argument("--device", default=env_default("CLMLF_DEVICE", "auto"), choices=("auto", "cpu", "cuda"))
    add_threads_argument(p)  # scored in fp32: a choice between runs must not hinge on bf16 rounding
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-level", metavar="LEVEL", default=env_default("LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    setup_logging(args.log_level)
    if len(args.ingredients) < 2:
        parser.error("a soup needs at least 2 ingredients")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    from clmlf.data.datasets import DataFormatError
    from clmlf.model.checkpoint import CheckpointError
    from clmlf.serving.cpu_threads import configure_threads

    try:
        shared_training(args.ingredients)  # refuse mismatched runs before anything heavy (or any log line)
        configure_threads(args.threads)
        result = make_soup(args.ingredients, args.out, data_root=args.data_root, uniform=args.uniform,
                           name=args.name, batch_size=args.batch_size, device=args.device,
                           progress=not args.no_progress)
    except (CheckpointError, DataFormatError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(format_soup(result, args.ingredients, args.out))
    sys.stdout.flush()
    return 0


def shared_training(ingredients: list[str]) -> tuple[list, dict]:
    """``(checkpoint paths, the training settings they share)``; raises a one-line error when they cannot be souped."""
    from clmlf.model.checkpoint import resolve_checkpoint_dir
    from clmlf.model.checkpoint_format import CheckpointError, read_json
    from clmlf.training.soup import check_shared_training

    paths = [resolve_checkpoint_dir(path) for path in ingredients]
    for path in paths:
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: checkpoint directory not found")
    metas = [read_json(path / "config.json") for path in paths]
    shared = check_shared_training([meta.get("extra", {}).get("train_config") for meta in metas],
                                   [str(path) for path in paths])
    return paths, shared


def selection_data(shared: dict, data_root: str | None = None):
    """``(TrainConfig, TrainingData)`` of runs that share ``shared`` training settings: the held-out slice
    they were all selected on, its per-source parts and the dev splits (``data_root`` overrides theirs)."""
    from clmlf.data.train_data import training_data
    from clmlf.training.config import TrainConfig

    cfg = TrainConfig(**({**shared, "data_root": data_root} if data_root else shared))
    data = training_data(cfg.data_root, cfg.datasets, holdout_fraction=cfg.holdout_fraction, seed=cfg.seed,
                         translation_view=cfg.translation_view, probe_images=cfg.use_images,
                         limit_train=cfg.limit_train)
    return cfg, data


def make_soup(ingredients: list[str], out: str, *, data_root: str | None = None, uniform: bool = False,
              name: str | None = None, batch_size: int = 64, device: str = "auto", progress: bool = False) -> dict:
    """Average ``ingredients`` (greedy on the held-out slice unless ``uniform``), write the result to ``out``.

    Returns ``{"members": [ingredient paths], "table": [steps], "metric", "evaluations": {report: metrics}}``.
    """
    import logging

    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.evaluation.predictions import predict_dataset
    from clmlf.model.checkpoint import load
    from clmlf.model.checkpoint_format import read_json
    from clmlf.model.checkpoint_save import save_checkpoint
    from clmlf.serving.inference import resolve_device
    from clmlf.training.soup import SoupError, average_states, greedy_soup

    log = logging.getLogger("clmlf.soup")
    paths, shared = shared_training(ingredients)
    metas = [read_json(path / "config.json") for path in paths]
    cfg, data = selection_data(shared, data_root)
    target = resolve_device(device)
    loaded = [load(path, target) for path in paths]
    if any(item.config != loaded[0].config for item in loaded[1:]):
        raise SoupError("ingredients differ in their model config.json (network shape, labels or encoders)")
    base = loaded[0]
    states = [{k: v.detach().clone() for k, v in item.model.state_dict().items()} for item in loaded]
    for item in loaded[1:]:
        item.model.to("cpu")
    del loaded[1:]

    selection, _ = data.selection
    pre = base.preprocessor
    eval_sets = {report: PostDataset(samples, pre, use_images=cfg.use_images) for report, samples in data.reports.items()}
    collate = BatchCollator(pre)
    metric = cfg.selection_metric

    def evaluate(state: dict, reports: list[str]) -> dict:
        base.model.load_state_dict(state)
        out = {}
        for report in reports:
            logits, _, gold = predict_dataset(base.model, eval_sets[report], collate, batch_size, target,
                                              progress=progress, desc=f"soup eval [{report}]")
            out[report] = classification_metrics(gold.tolist(), logits.argmax(-1).tolist(), data.label_names)
        return out

    scores = [evaluate(state, [selection])[selection][metric] for state in states]
    for path, score in zip(paths, scores, strict=True):
        log.info("ingredient %s: %s %s %.4f", path, selection, metric, score)
    if uniform:
        members = list(range(len(states)))
        table = [{"members": members, "score": None, "kept": True}]
    else:
        def score_members(indices: list[int]) -> float:
            score = evaluate(average_states([states[i] for i in indices]), [selection])[selection][metric]
            log.info("soup of %s: %s %s %.4f", [str(paths[i]) for i in indices], selection, metric, score)
            return score

        members, table = greedy_soup(scores, score_members)
    soup = average_states([states[i] for i in members])
    evaluations = evaluate(soup, list(eval_sets))
    member_paths = [str(paths[i]) for i in members]
    soup_meta = {
        "ingredients": [str(p) for p in paths], "members": member_paths, "uniform": uniform, "metric": metric,
        "selected_on": selection, "ingredient_scores": scores,
        "table": [{**row, "members": [str(paths[i]) for i in row["members"]]} for row in table],
    }
    # The recipe recorded is the best member's (the one the soup started from); each member's is in its own run.
    lead = metas[members[0]].get("extra", {}).get("train_config", shared)
    extra = {"train_config": lead, "soup": soup_meta, "selection": selection, "dev": evaluations[selection],
             "evaluations": evaluations}
    save_checkpoint(base.model, pre.tokenizer, out, extra=extra, name=name, fusion_dtype=cfg.fusion_dtype)
    return {"members": member_paths, "table": soup_meta["table"], "metric": metric, "selected_on": selection,
            "ingredient_scores": dict(zip(soup_meta["ingredients"], scores, strict=True)),
            "evaluations": {report: {k: m[k] for k in ("accuracy", "f1_weighted", "f1_macro", "n")}
                            | {"recall": {label: m["per_class"][label]["recall"] for label in data.label_names}}
                            for report, m in evaluations.items()}}


def format_soup(result: dict, ingredients: list[str], out: str) -> str:
    """The soup's steps and scores, readable."""
    lines = [f"soup written to {out}: {len(result['members'])} of {len(ingredients)} ingredients "
             f"(selected on {result['selected_on']}, {result['metric']})"]
    for path, score in result["ingredient_scores"].items():
        lines.append(f"  ingredient {path}: {score:.4f}")
    for row in result["table"][1:]:
        if row["score"] is not None:
            lines.append(f"  + {row['members'][-1]}: soup {row['score']:.4f} ({'kept' if row['kept'] else 'dropped'})")
    lines.append(f"{'report':<28} {'accuracy':>9} {'wF1':>7} {'mF1':>7}  recall")
    for report, m in result["evaluations"].items():
        recall = " / ".join(f"{r:.2f}" for r in m["recall"].values())
        lines.append(f"{report:<28} {m['accuracy']:>9.4f} {m['f1_weighted']:>7.4f} {m['f1_macro']:>7.4f}  {recall}")
    return "\n".join(lines)
