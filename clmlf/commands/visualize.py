"""``clmlf visualize {attention,clusters,curves}``: the paper's figures and training curves as PNG files."""

from __future__ import annotations

import argparse

from clmlf.settings import OneLineArgumentParser, add_threads_argument, env_default, setup_logging

EPILOG = """\
examples:
  # Figure 5: where does the word 'happy' look in the picture? (first head, last fusion layer)
  clmlf visualize attention --checkpoint runs/mvsa/best --text "so happy at the beach" \\
      --image beach.jpg --token happy --out attention.png
  clmlf visualize attention --text "so happy at the beach" --image beach.jpg --out all_tokens.png

  # Figure 6: t-SNE of the fused representation R over a split, coloured by gold label
  clmlf visualize clusters --data-root data --dataset mvsa-single --split dev --out clusters.png

  # training and dev curves of a run
  clmlf visualize curves --run runs/mvsa --out curves.png
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="draw attention maps, t-SNE clusters or training curves",
        description="Draw the CLMLF figures as PNG files.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="figure", metavar="FIGURE", parser_class=OneLineArgumentParser)
    sub.required = True

    att = sub.add_parser("attention", help="text-token -> image-patch attention over the image (Figure 5)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _checkpoint_arg(att)
    att.add_argument("--text", required=True, help="post text")
    att.add_argument("--image", required=True, help="image file (JPEG, PNG, GIF, WebP, BMP)")
    att.add_argument("--aspect", help="aspect term (aspect-based checkpoints)")
    att.add_argument("--token", help="text word-piece to draw (default: every token, up to --max-tokens)")
    att.add_argument("--max-tokens", type=int, default=12, help="panels when drawing every token (default 12)")
    att.add_argument("--out", required=True, help="PNG file to write")

    clu = sub.add_parser("clusters", help="t-SNE of the fused representation over a split (Figure 6)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _checkpoint_arg(clu)
    clu.add_argument("--data-root", default=env_default("CLMLF_DATA_ROOT"), help="dataset folder (env CLMLF_DATA_ROOT)")
    clu.add_argument("--dataset", required=True, choices=("mvsa-single", "mvsa-multiple", "hfm", "twitter15", "twitter17", "probe"))
    clu.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    clu.add_argument("--max-samples", type=int, default=2000, help="random subset for t-SNE speed (default 2000)")
    clu.add_argument("--seed", type=int, default=0)
    clu.add_argument("--out", required=True, help="PNG file to write")

    cur = sub.add_parser("curves", help="training loss and dev metrics per epoch of a run",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cur.add_argument("--run", required=True, help="a clmlf train --out directory or its metrics.jsonl")
    cur.add_argument("--out", required=True, help="PNG file to write")

    for sp in (att, clu):  # the two that run the model
        add_threads_argument(sp)
    for sp in (att, clu, cur):
        sp.add_argument("--log-level", default=env_default("LOG_LEVEL", "WARNING"))
        sp.set_defaults(func=run)
    p.set_defaults(func=run)


def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=env_default("CLMLF_CHECKPOINT"),
                   help="checkpoint directory (default: embedded model; env CLMLF_CHECKPOINT)")
    p.add_argument("--device", default=env_default("CLMLF_DEVICE", "auto"), choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    setup_logging(args.log_level)
    from clmlf.data.datasets import DataFormatError
    from clmlf.fetch.decode import ImageDecodeError
    from clmlf.model.checkpoint import CheckpointError
    from clmlf.model.encoders import EncoderError

    handlers = {"attention": _attention, "clusters": _clusters, "curves": _curves}
    try:
        out = handlers[args.figure](args, parser)
    except (CheckpointError, DataFormatError, EncoderError, ImageDecodeError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    print(out)
    return 0


def _load(args: argparse.Namespace):
    from clmlf.model.checkpoint import load
    from clmlf.serving.cpu_threads import configure_threads
    from clmlf.serving.inference import resolve_device

    configure_threads(args.threads)  # the figures that load a model are the ones that take --threads
    path = args.checkpoint
    if path is None:
        from clmlf.model.default_model import default_checkpoint_dir

        path = default_checkpoint_dir()
    loaded = load(path)
    device = resolve_device(args.device)
    loaded.model.to(device).eval()
    return loaded, device


def _attention(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from pathlib import Path

    import torch

    from clmlf.evaluation.visualize import attention_grid, plot_attention

    if args.max_tokens < 1:
        parser.error("--max-tokens must be >= 1")
    image_path = Path(args.image)
    if not image_path.is_file():
        raise FileNotFoundError(f"{image_path}: image file not found")
    loaded, device = _load(args)
    if not loaded.config.trained_with_images:
        raise ValueError(f"{loaded.name} was trained without images (trained_with_images: false): "
                         "it never attends to an image, so there is no attention map to draw")
    pre = loaded.preprocessor
    picture = pre.resize_and_crop(pre.decode(image_path.read_bytes()))
    batch = pre.collate([args.text], [pre.to_tensor(picture)], [args.aspect] if args.aspect else None)
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        output = loaded.model(**batch, return_attentions=True)
    if not output.attentions:
        raise ValueError("the checkpoint's fusion transformer returned no attention weights")
    weights = output.attentions[-1][0, 0].float().cpu().numpy()  # last layer, first head: [L, L]
    n_text = output.num_text_tokens
    tokens = pre.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    special = set(pre.tokenizer.all_special_tokens)
    positions = [i for i, tok in enumerate(tokens[:n_text]) if tok not in special]
    if args.token:
        wanted = args.token.lower()
        positions = [i for i in positions if tokens[i].lower().lstrip("#") == wanted.lstrip("#")]
        if not positions:
            shown = " ".join(tokens[i] for i in range(n_text) if tokens[i] not in special)
            raise ValueError(f"token {args.token!r} is not in the tokenized text: {shown}")
        positions = positions[:1]
    positions = positions[: args.max_tokens]
    if not positions:
        raise ValueError("the text has no tokens to draw")
    grids = [attention_grid(weights[i, n_text + 1 :]) for i in positions]  # skip the global image token
    probabilities = output.logits.float().softmax(-1)[0].tolist()
    label = loaded.config.labels[int(torch.tensor(probabilities).argmax())]
    title = f"{loaded.name}: predicted {label} ({max(probabilities):.2f}); first head of the last fusion layer"
    return plot_attention(picture, grids, [tokens[i] for i in positions], args.out, title)


def _clusters(args: argparse.Namespace, parser: argparse.ArgumentParser):
    import logging

    import numpy as np

    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.data.datasets import load_split
    from clmlf.evaluation.predictions import predict_dataset
    from clmlf.evaluation.visualize import plot_clusters, tsne_2d

    if not args.data_root:
        parser.error("--data-root is required (or set CLMLF_DATA_ROOT)")
    if args.max_samples < 3:
        parser.error("--max-samples must be >= 3")
    loaded, device = _load(args)
    data = load_split(args.data_root, args.dataset, args.split)
    stats = data.stats
    if stats.missing_images or stats.unreadable_images:  # once per run (REFERENCE.md section 7)
        logging.getLogger("clmlf.visualize").warning(stats.summary(f"{args.dataset}/{args.split}"))
    samples = data.samples
    if len(samples) > args.max_samples:
        keep = np.random.default_rng(args.seed).choice(len(samples), args.max_samples, replace=False)
        samples = [samples[i] for i in sorted(keep)]
    dataset = PostDataset(samples, loaded.preprocessor)
    _, fused, gold = predict_dataset(loaded.model, dataset, BatchCollator(loaded.preprocessor), 64, device)
    points = tsne_2d(fused.numpy(), seed=args.seed)
    title = f"t-SNE of R: {loaded.name} on {args.dataset}/{args.split} (n={len(samples)})"
    return plot_clusters(points, gold.tolist(), loaded.config.labels, args.out, title)


def _curves(args: argparse.Namespace, parser: argparse.ArgumentParser):
    from pathlib import Path

    from clmlf.evaluation.visualize import plot_curves, read_metrics

    records = read_metrics(args.run)
    return plot_curves(records, args.out, title=f"{Path(args.run).resolve().name}: {len(records)} epochs")
