"""``clmlf predict``: label a JSONL file of posts, one result record per input line.

No Kafka, no Redis: read post messages (CONTRACT.md schema), fetch/decode their
images, run the model in batches, write one JSON line per input line in the
same order. A bad line becomes an error record at its position (and a warning);
a post whose image cannot be fetched or decoded is still classified on its text
(``"image": "failed"``). A checkpoint trained without images never fetches or
decodes one (``"image": "ignored"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clmlf.settings import add_precision_arguments, build_config, env_default, env_flag, setup_logging

if TYPE_CHECKING:
    from clmlf.fetch.image_fetch import ImageFetcher
    from clmlf.serving.inference import Predictor
    from contract.posts import InvalidPost, ResultRecord

log = logging.getLogger("clmlf.predict")

CHUNK_LINES = 256  # lines read, fetched and written together (bounds memory on big inputs)
# A text-only model holds no image tensors, so its chunks can be longer: more posts to sort by token
# count before cutting batches, less padding (docs/performance.md, "Batching by tokens").
TEXT_ONLY_CHUNK_LINES = 1024
IMAGE_WORKERS = 8

EXAMPLES = """\
examples:
  clmlf predict --input examples/posts.jsonl --output results.jsonl
  clmlf predict --input posts.jsonl --checkpoint runs/mvsa-single/best --output - | jq .label
  cat posts.jsonl | clmlf predict --input - --output results.jsonl --batch-size 64 --device cuda
  clmlf predict --input posts.jsonl --output results.jsonl --precision fp32 --threads 2

Each output line is a result record
  {"id", "label", "scores", "topics", "created_at", "processed_at", "model", "image"}
with image = used | none | failed | ignored (the checkpoint was trained without images:
the image is neither fetched nor decoded), or, for a line that is not a valid post,
  {"id": <id or null>, "line": N, "error": {"reason": ..., "detail": ...}}.
Precision (--precision, chosen once at start-up and logged): auto = bf16 autocast on CUDA and
on CPUs with native bf16 (avx512_bf16 / amx_bf16), else fp32; int8 is opt-in (changes labels).
Threads (--threads): auto = the container's CPU quota (cgroup), else the usable CPUs.
Environment: CLMLF_CHECKPOINT, CLMLF_DEVICE, CLMLF_PRECISION, CLMLF_THREADS, CLMLF_ALLOW_PRIVATE_IMAGES,
LOG_LEVEL.
"""


class PredictConfig(BaseModel):
    """Validated options of one ``clmlf predict`` run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    checkpoint: str | None = None
    batch_size: int | None = Field(None, ge=1, le=4096)  # None: from the model (64 text-only, 32 with images)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    allow_private_images: bool = False
    progress: bool = True


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="label a JSONL file of posts (no Kafka/Redis needed)",
        description="Label every post of a JSONL file (one post message per line, CONTRACT.md schema) "
        "with a CLMLF checkpoint and write one result record per line, in input order.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, metavar="FILE", help="posts, one JSON object per line ('-' = stdin)")
    parser.add_argument("--output", default="-", metavar="FILE", help="result records ('-' = stdout, the default)")
    parser.add_argument(
        "--checkpoint",
        default=env_default("CLMLF_CHECKPOINT"),
        metavar="DIR",
        help="checkpoint directory (env CLMLF_CHECKPOINT; default: the embedded model)",
    )
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="posts per forward pass (default: 64 for a text-only model such as the embedded one, "
                             "32 for a model that reads images)")
    parser.add_argument(
        "--device",
        default=env_default("CLMLF_DEVICE", "auto"),
        help="auto, cpu or cuda (env CLMLF_DEVICE; default auto: CUDA with bf16 when available)",
    )
    add_precision_arguments(parser)
    parser.add_argument(
        "--allow-private-images",
        action="store_true",
        default=env_flag("CLMLF_ALLOW_PRIVATE_IMAGES"),
        help="let image_url point at private/loopback addresses (env CLMLF_ALLOW_PRIVATE_IMAGES; off by default)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--log-level", default=env_default("LOG_LEVEL", "INFO"), help="logging level (env LOG_LEVEL)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    setup_logging(args.log_level)
    config = build_config(
        parser,
        PredictConfig,
        {
            "input": args.input,
            "output": args.output,
            "checkpoint": args.checkpoint,
            "batch_size": args.batch_size,
            "device": args.device,
            "precision": args.precision,
            "threads": args.threads,
            "allow_private_images": args.allow_private_images,
            "progress": not args.no_progress,
        },
    )
    if config.input != "-" and not Path(config.input).is_file():
        parser.error(f"--input: file not found: {config.input}")
    if config.output != "-" and not Path(config.output).resolve().parent.is_dir():
        parser.error(f"--output: directory does not exist: {Path(config.output).parent}")

    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher
    from clmlf.model.checkpoint import CheckpointError
    from clmlf.serving.cpu_threads import configure_threads
    from clmlf.serving.inference import Predictor

    try:
        predictor = Predictor.from_checkpoint(config.checkpoint, device=config.device, batch_size=config.batch_size,
                                              precision=config.precision)
    except CheckpointError as exc:
        parser.error(f"--checkpoint: {exc}")
    except ValueError as exc:  # e.g. --device cuda without a GPU, --precision int8 on CUDA
        parser.error(f"{'--precision' if str(exc).startswith('precision') else '--device'}: {exc}")
    configure_threads(config.threads)  # after every start-up check: a bad argument stays a one-line error
    log.info("model %s on %s, %s", predictor.model_name, predictor.device, predictor.precision.mode)

    with ExitStack() as stack:
        source = sys.stdin.buffer if config.input == "-" else stack.enter_context(open(config.input, "rb"))
        sink = sys.stdout if config.output == "-" else stack.enter_context(open(config.output, "w", encoding="utf-8"))
        fetcher = stack.enter_context(ImageFetcher(FetchConfig(allow_private=config.allow_private_images)))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=IMAGE_WORKERS, thread_name_prefix="image"))
        stats = predict_stream(source, sink, predictor, fetcher, pool, progress=config.progress,
                               total=None if config.input == "-" else _count_lines(config.input))
    log.info(
        "labelled %d posts (%d bad lines, %d failed images, %d ignored images) -> %s",
        stats["posts"], stats["bad_lines"], stats["failed_images"], stats["ignored_images"], config.output,
    )
    return 0


def predict_stream(
    source: IO[bytes],
    sink: IO[str],
    predictor: Predictor,
    fetcher: ImageFetcher,
    pool: ThreadPoolExecutor,
    *,
    progress: bool = True,
    total: int | None = None,
    chunk_lines: int | None = None,
) -> dict[str, int]:
    """Read ``source`` chunk by chunk and write one JSON line per input line to ``sink``
    (labelled by :class:`clmlf.serving.labelling.Labeller`, images resolved on ``pool``).

    ``chunk_lines``: lines labelled together (None: :data:`CHUNK_LINES`, or
    :data:`TEXT_ONLY_CHUNK_LINES` for a model that ignores images)."""
    from tqdm import tqdm

    from clmlf.serving.labelling import Labeller

    labeller = Labeller.for_predictor(predictor, fetcher.post_image_bytes, failure_level=logging.WARNING)
    stats = {"posts": 0, "bad_lines": 0, "failed_images": 0, "ignored_images": 0}
    with tqdm(total=total, unit="post", desc="predict", file=sys.stderr, disable=not progress or None) as bar:
        size = chunk_lines or (CHUNK_LINES if labeller.uses_images else TEXT_ONLY_CHUNK_LINES)
        for first_line, lines in _chunks(source, size):
            rejected = stats["bad_lines"]
            outcomes = labeller.label(lines, pool.map, on_batch=bar.update)  # the bar moves per model batch
            for number, (raw, outcome) in enumerate(zip(lines, outcomes, strict=True), start=first_line):
                sink.write(_output_line(raw, number, outcome, stats) + "\n")
            sink.flush()
            bar.update(stats["bad_lines"] - rejected)  # the chunk's rejected lines never reach the model
    return stats


def _chunks(source: IO[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, up to ``size`` raw lines without their newline)."""
    chunk: list[bytes] = []
    first = 1
    for number, raw in enumerate(source, start=1):
        chunk.append(raw.rstrip(b"\r\n"))
        if len(chunk) == size:
            yield first, chunk
            chunk, first = [], number + 1
    if chunk:
        yield first, chunk


def _output_line(raw: bytes, number: int, outcome: ResultRecord | InvalidPost, stats: dict[str, int]) -> str:
    """Input line ``number``'s output line: its result record, or its error record (logged)."""
    from contract.posts import InvalidPost

    if isinstance(outcome, InvalidPost):
        log.warning("line %d: skipped, %s: %s", number, outcome.reason, outcome.detail)
        stats["bad_lines"] += 1
        return _error_line(raw, number, outcome.reason, outcome.detail)
    stats["posts"] += 1
    stats["failed_images"] += outcome.image == "failed"
    stats["ignored_images"] += outcome.image == "ignored"
    return outcome.to_json()


def _error_line(raw: bytes, number: int, reason: str, detail: str) -> str:
    return json.dumps(
        {"id": _best_effort_id(raw), "line": number, "error": {"reason": reason, "detail": detail}},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _best_effort_id(raw: bytes) -> Any:
    """The ``id`` of a rejected line when it has a usable one, else None."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    post_id = obj.get("id") if isinstance(obj, dict) else None
    return post_id if isinstance(post_id, str) and 0 < len(post_id) <= 256 else None


def _count_lines(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
