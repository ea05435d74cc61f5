"""Streaming pipeline benchmark: efficiency against the bare predict path, and latency under load.

1. Bare ``clmlf predict`` path: ``clmlf.commands.predict.predict_stream`` (the code
   behind ``clmlf predict``: parse, fetch/decode images on a thread pool, Predictor
   in batches of --max-batch) over the posts, no Kafka, no Redis.
2. Pipeline: the same posts pre-loaded in a topic of a private Tansu broker, one
   in-process ``clmlf-monitor run`` pipeline (same Predictor object, same batch
   size) until every result is in a private Redis: Kafka -> validation -> image
   stage (inline base64 and loopback HTTP) -> model -> Redis, offsets committed.
   Efficiency = pipeline posts/s / predict-path posts/s.
3. Latency: posts fed at 50 % and 90 % of the measured pipeline rate; per post,
   result ``processed_at`` minus ``created_at`` (stamped when sent); p50 / p99.

Precision (``--precision``, a column): each listed variant gets its own Predictor
(``today`` = fp32 with the image encoder in NCHW, the path before precision modes;
``fp32`` / ``bf16`` / ``int8`` as resolved by clmlf.serving.precision); every round runs the
predict path and the pipeline of every variant in turn, so they share the load. A variant ending
in ``/pycrc`` runs its pipeline with kafka-python's pure-Python CRC-32C check (what a consumer
without the ``crc32c`` package pays on every fetched batch).
Label agreement of each variant with ``today`` is measured on --agreement-posts
separate posts (same mix) through the predict path. Latency runs use the last
variant listed.

Model: the embedded default when installed, else the default architecture
(all-MiniLM-L6-v2 + EfficientNet-Lite0 real weights, random fusion layers) saved
once to --model-cache.  Runs on CUDA when --device cuda/auto finds a GPU.

    .venv/bin/python bench/pipeline.py                         # ~3-4 min on 2 CPU cores
    .venv/bin/python bench/pipeline.py --precision today bf16 --agreement-posts 500
    .venv/bin/python bench/pipeline.py --posts 96 --latency-seconds 10   # quicker, noisier
    .venv/bin/python bench/pipeline.py --texts ../shared/data/clmlf-reference/MVSA-single/10-flod-1/dev.json
                                                                          # real post texts, not random words
    .venv/bin/python bench/pipeline.py --device cuda --posts 2000 --max-batch 64
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


PURE_PYTHON_CRC = "/pycrc"


def _variant(text: str) -> str:
    spec, _, pool = text.removesuffix(PURE_PYTHON_CRC).partition("~")
    name, _, batch = spec.partition("@")
    if (name not in ("today", "auto", "fp32", "bf16", "int8") or (batch and not (batch.isdigit() and int(batch) > 0))
            or (pool and not (pool.isdigit() and int(pool) > 0))):
        raise argparse.ArgumentTypeError(f"{text!r}: expected today, auto, fp32, bf16 or int8, optionally @N "
                                         f"(batch size), ~K (batch pool), N, K >= 1, and {PURE_PYTHON_CRC}")
    return text


def variant_pool(spec: str) -> int | None:
    """The ``~K`` of a variant: the stream's --batch-pool (None: the default)."""
    _, _, pool = spec.removesuffix(PURE_PYTHON_CRC).partition("~")
    return int(pool) if pool else None


@contextlib.contextmanager
def kafka_crc(spec: str):
    """For a ``/pycrc`` variant, kafka-python checks record-batch CRCs with its pure-Python fallback
    (as when the ``crc32c`` package is missing) while the block runs; otherwise nothing changes."""
    if not spec.endswith(PURE_PYTHON_CRC):
        yield
        return
    import kafka.record.default_records as records
    from kafka.record._crc32c import crc as pure_python

    installed = records.calc_crc32c
    records.calc_crc32c = pure_python
    try:
        yield
    finally:
        records.calc_crc32c = installed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=192, help="posts in the throughput runs (default 192)")
    parser.add_argument("--max-batch", type=int, default=16, help="micro-batch / predict batch size (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=50.0, help="pipeline micro-batch age cap (default 50)")
    parser.add_argument("--image-share", type=float, default=0.3,
                        help="share of posts with an image, half inline half by URL (default 0.3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds (default 3)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="feed time per latency run")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--precision", nargs="+", default=["today", "auto"], type=_variant, metavar="MODE[@N][~K][/pycrc]",
                        help="serving precision variants: today, auto, fp32, bf16 or int8, each optionally @N for "
                             "its own batch size, ~K for the stream's --batch-pool and /pycrc for kafka-python's "
                             "pure-Python CRC-32C (as without the crc32c package) (default: today auto); "
                             "latency uses the last")
    parser.add_argument("--agreement-posts", type=int, default=500,
                        help="posts labelled by every variant to measure agreement with the first (0 = skip)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint to use instead of the default model")
    parser.add_argument("--texts", type=Path, metavar="SPLIT_JSON",
                        help="draw post texts from this MVSA-layout split file (e.g. ../shared/data/clmlf-reference/"
                             "MVSA-single/10-flod-1/dev.json) instead of random words")
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "clmlf-bench-default-arch",
                        help="where the random-fusion default-architecture checkpoint is saved when needed")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def resolve_checkpoint(args: argparse.Namespace) -> tuple[str | None, str]:
    """(checkpoint path or None for the embedded default, description)."""
    if args.checkpoint:
        return args.checkpoint, f"checkpoint {args.checkpoint}"
    from clmlf.model.checkpoint import CheckpointError
    from clmlf.model.default_model import default_checkpoint_dir

    try:
        return str(default_checkpoint_dir()), "embedded default model"
    except CheckpointError:
        pass
    target = args.model_cache
    if not (target / "config.json").is_file():
        import torch

        from clmlf.model.checkpoint_save import save_checkpoint
        from clmlf.model.config import ModelConfig
        from clmlf.model.model import CLMLF

        say(f"no embedded default model: saving the default architecture with random fusion to {target}")
        torch.manual_seed(0)
        model = CLMLF(ModelConfig()).eval()
        save_checkpoint(model, model.text_encoder.tokenizer, target, include_frozen_encoders=True,
                        name="minilm-effnetlite0-random-fusion")
    return str(target), "MiniLM-L6 + EfficientNet-Lite0 (real weights), random fusion (default model absent)"


def png(seed: int, size: int = 320) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(12):
        x, y = rng.randrange(size), rng.randrange(size)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size, x + 60), min(size, y + 60)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class ImageServer:
    """Loopback HTTP server for /img/<n>.jpg."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        cache: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1].split(".")[0]
                body = cache.get(name) or cache.setdefault(name, png(int(name) if name.isdigit() else 0))
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


WORDS = ("love", "hate", "the", "new", "phone", "coffee", "flight", "was", "really", "great", "awful", "fine",
         "service", "today", "again", "never", "best", "worst", "ok", "meh")


def make_posts(n: int, prefix: str, image_share: float, image_base: str, seed: int,
               texts: list[str] | None = None) -> list[dict]:
    """``n`` posts: texts of 4-40 random words, or drawn from ``texts`` (real posts) when given."""
    rng = random.Random(seed)
    posts = []
    for i in range(n):
        text = rng.choice(texts) if texts else " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40)))
        post = {"id": f"{prefix}{i}", "text": text, "topics": ["bench"]}
        roll = rng.random()
        if roll < image_share / 2:
            post["image_b64"] = base64.b64encode(png(seed * 100_000 + i)).decode()
        elif roll < image_share:
            post["image_url"] = f"{image_base}/img/{seed * 100_000 + i}.jpg"
        posts.append(post)
    return posts


def bench_predict_path(predictor, posts: list[dict], allow_private: bool = True, labels: list | None = None,
                       cpu: list | None = None) -> float:
    """posts/s of clmlf predict's own code path over ``posts`` (their labels appended to ``labels``; the CPU
    seconds by component appended to ``cpu``)."""
    from concurrent.futures import ThreadPoolExecutor

    from cpu_accounting import CpuSample

    from clmlf.commands.predict import IMAGE_WORKERS, predict_stream
    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher

    source = io.BytesIO(b"".join(json.dumps(p).encode() + b"\n" for p in posts))
    sink = io.StringIO()
    with ImageFetcher(FetchConfig(allow_private=allow_private)) as fetcher, \
            ThreadPoolExecutor(max_workers=IMAGE_WORKERS, thread_name_prefix="image") as pool:
        before = CpuSample.take()
        start = time.perf_counter()
        stats = predict_stream(source, sink, predictor, fetcher, pool, progress=False)
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.append(CpuSample.take().minus(before))
    assert stats["posts"] == len(posts), stats
    if labels is not None:
        labels.extend(json.loads(line)["label"] for line in sink.getvalue().splitlines())
    return len(posts) / elapsed


class PipelineHarness:
    """A private broker + Redis + one in-process pipeline reading ``topic``."""

    def __init__(self, predictor, args: argparse.Namespace, workdir: Path) -> None:
        from consumers.local_infra import LocalBroker, LocalRedis

        self.broker = LocalBroker(log_path=workdir / "broker.log").start()
        self.redis = LocalRedis().start()
        self.predictor = predictor
        self.batch_pool: int | None = None  # the stream's --batch-pool of the variant being run (None: default)
        self.args = args

    def run_topic(self, topic: str, posts_before: list[dict], feed=None, expected: int | None = None,
                  cpu: list | None = None) -> float:
        """Start a member on ``topic``; returns seconds from first assignment to all ``expected`` stored
        (the CPU seconds by component over that interval, broker and Redis included, appended to ``cpu``)."""
        import redis
        from cpu_accounting import CpuSample

        from consumers.assembly import assemble
        from consumers.config import RunConfig
        from monitor.store import SentimentStore

        self.broker.create_topics({topic: 3, f"{topic}.dlq": 1})
        if posts_before:
            produce(self.broker.bootstrap, topic, posts_before)
        config = RunConfig(bootstrap=self.broker.bootstrap, topic=topic, group=f"bench-{topic}",
                           redis_url=self.redis.url, redis_prefix=topic, max_batch=self.predictor.batch_size,
                           max_wait_ms=self.args.max_wait_ms, metrics_port=0, allow_private_images=True,
                           session_timeout_ms=6000, **({"batch_pool": self.batch_pool} if self.batch_pool else {}))
        assembled = assemble(config, predictor=self.predictor, serve_http=False)
        pipeline = assembled.pipeline
        loop = threading.Thread(target=pipeline.run, name="consumer-loop", daemon=True)
        loop.start()
        store = SentimentStore(redis.Redis.from_url(self.redis.url, decode_responses=True), prefix=topic)
        expected = expected if expected is not None else len(posts_before)
        try:
            while not pipeline.tracker.partitions:
                time.sleep(0.01)
            services = {"broker": self.broker.pid, "redis": self.redis.pid}
            before = CpuSample.take(services)
            busy_before = model_seconds(assembled.metrics)
            start = time.perf_counter()
            if feed is not None:
                threading.Thread(target=feed, args=(self.broker.bootstrap, topic), daemon=True).start()
            # Done when the sink has counted every post (it counts after the Redis write): an in-process read,
            # so the harness's own polling costs the stream nothing (a Redis query every 20 ms cost about
            # 0.2 ms of CPU per post here, plus Redis's share); Redis is checked once at the end.
            while processed(assembled.metrics) < expected:
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            if cpu is not None:  # before stop(): the stream's threads are still alive to be read
                cpu.append(CpuSample.take(services).minus(before))
                # Wall share of the round the model worker spent inside forward passes (1.0: never starved).
                cpu[-1]["model_busy_share"] = (model_seconds(assembled.metrics) - busy_before) / elapsed
            stored = store.window_counts("bench", 3600).total
            assert stored >= expected, f"the sink counted {expected} posts but Redis holds {stored}"
            return elapsed
        finally:
            pipeline.stop()
            loop.join(timeout=60)
            assembled.close()

    def results(self, topic: str, ids: list[str]) -> list[dict]:
        import redis

        from monitor.store import SentimentStore

        store = SentimentStore(redis.Redis.from_url(self.redis.url, decode_responses=True), prefix=topic)
        return [store.get_result(i) for i in ids]

    def close(self) -> None:
        self.redis.stop()
        self.broker.stop()


def processed(metrics) -> float:
    """Posts the member's sink has labelled and stored so far (its clmlf_posts_processed counter)."""
    return sum(sample.value for family in metrics.posts_processed.collect() for sample in family.samples
               if sample.name.endswith("_total"))


def model_seconds(metrics) -> float:
    """Seconds the member's model worker has spent in forward passes so far (clmlf_inference_seconds sum)."""
    return sum(sample.value for family in metrics.inference_seconds.collect() for sample in family.samples
               if sample.name.endswith("_sum"))


def per_post_cpu(rounds: list[dict[str, float]], posts: int) -> dict[str, float]:
    """Median over rounds of CPU milliseconds per post, by component (``total`` = this process's threads)."""
    components = sorted({c for r in rounds for c in r} - {"model_busy_share"})
    out = {c: round(statistics.median(r.get(c, 0.0) for r in rounds) * 1000 / posts, 2) for c in components}
    out["total"] = round(statistics.median(
        sum(v for c, v in r.items() if c not in ("broker", "redis", "model_busy_share")) for r in rounds)
        * 1000 / posts, 2)
    if any("model_busy_share" in r for r in rounds):
        out["model_busy_share"] = round(statistics.median(r["model_busy_share"] for r in rounds), 3)
    return out


def produce(bootstrap: str, topic: str, posts: list[dict], rate: float | None = None) -> None:
    """Send posts (stamping created_at at send time when ``rate`` is given, evenly spaced)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2 if rate else 20, acks="all",
                             max_request_size=8 * 1024 * 1024)
    start = time.perf_counter()
    for i, post in enumerate(posts):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            post = {**post, "created_at": time.time()}
        producer.send(topic, key=post["id"].encode(), value=json.dumps(post).encode())
    producer.flush()
    producer.close()


def iso_to_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{os.cpu_count()} CPU cores ({cpu}), GPU: {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, torch threads {torch.get_num_threads()}; "
            f"1-min load average {os.getloadavg()[0]:.1f} (cores shared with other work)")


def load_variant(checkpoint: str | None, spec: str, args: argparse.Namespace):
    """A Predictor in the variant's precision (``today`` = fp32, NCHW image encoder); ``NAME@N`` sets its
    batch size (the predict path's batches and the pipeline's max_batch) instead of --max-batch."""
    from today import today_plan

    from clmlf.serving.inference import Predictor, resolve_device

    name, _, batch = spec.removesuffix(PURE_PYTHON_CRC).partition("~")[0].partition("@")
    batch_size = int(batch) if batch else args.max_batch

    if name == "today":
        device = resolve_device(args.device)
        if device.type == "cpu":
            plan = today_plan()
            return Predictor.from_checkpoint(checkpoint, device="cpu", batch_size=batch_size, precision=plan)
        name = "auto"
    return Predictor.from_checkpoint(checkpoint, device=args.device, batch_size=batch_size, precision=name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from bench_output import emit_results

    torch.set_num_threads(args.threads)
    checkpoint, model_desc = resolve_checkpoint(args)
    texts = [row["text"] for row in json.loads(args.texts.read_text(encoding="utf-8"))] if args.texts else None
    predictors = {name: load_variant(checkpoint, name, args) for name in dict.fromkeys(args.precision)}
    first = next(iter(predictors.values()))
    say(f"model: {model_desc} on {first.device}, variants "
        + ", ".join(f"{n}={p.precision.mode}" for n, p in predictors.items()))
    images = ImageServer()
    results: dict = {"command": "python bench/pipeline.py " + shlex.join(argv or sys.argv[1:]),
                     "machine": machine(), "model": model_desc, "device": str(first.device),
                     "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "posts": args.posts,
                     "image_share": args.image_share, "load_average_start": round(os.getloadavg()[0], 1),
                     "variants": {}}
    with tempfile.TemporaryDirectory(prefix="clmlf-bench-") as tmp:
        harness = PipelineHarness(first, args, Path(tmp))
        try:
            warm = make_posts(args.max_batch, "warm", args.image_share, images.base, seed=1, texts=texts)
            for predictor in predictors.values():
                bench_predict_path(predictor, warm)
            # Rounds alternate predict path and pipeline of every variant on the same posts (fresh ids each
            # round), so load from other work on a shared machine hits all alike; medians are reported.
            rates = {name: {"predict": [], "pipeline": [], "ratio": [], "cpu_predict": [], "cpu_pipeline": []}
                     for name in predictors}
            for round_no in range(args.rounds):
                posts = make_posts(args.posts, f"r{round_no}-", args.image_share, images.base, seed=2, texts=texts)
                for name, predictor in predictors.items():
                    say(f"round {round_no + 1}/{args.rounds} {name}: predict path, then pipeline, {len(posts)} posts")
                    predict_rate = bench_predict_path(predictor, posts, cpu=rates[name]["cpu_predict"])
                    harness.predictor, harness.batch_pool = predictor, variant_pool(name)
                    topic = f"throughput{round_no}-{name.replace('@', '-b').replace('~', '-p').replace('/', '-')}"
                    with kafka_crc(name):
                        pipeline_rate = args.posts / harness.run_topic(topic, posts, cpu=rates[name]["cpu_pipeline"])
                    rates[name]["predict"].append(predict_rate)
                    rates[name]["pipeline"].append(pipeline_rate)
                    rates[name]["ratio"].append(pipeline_rate / predict_rate)
                    say(f"  pipeline {pipeline_rate:.2f} posts/s, predict path {predict_rate:.2f} posts/s, "
                        f"ratio {pipeline_rate / predict_rate:.3f}")
            reference = next(iter(predictors))
            for name, r in rates.items():
                results["variants"][name] = {
                    "precision": predictors[name].precision.mode,
                    "batch": predictors[name].batch_size,
                    "predict_path_posts_per_s": round(statistics.median(r["predict"]), 2),
                    "pipeline_posts_per_s": round(statistics.median(r["pipeline"]), 2),
                    "efficiency_vs_predict_path": round(statistics.median(r["ratio"]), 3),
                    "efficiency_per_round": [round(x, 3) for x in r["ratio"]],
                    "cpu_ms_per_post": {path: per_post_cpu(r[f"cpu_{path}"], args.posts)
                                        for path in ("predict", "pipeline")},
                    "predict_speedup_vs_first": round(statistics.median(
                        [a / b for a, b in zip(r["predict"], rates[reference]["predict"], strict=True)]), 2),
                    "pipeline_speedup_vs_first": round(statistics.median(
                        [a / b for a, b in zip(r["pipeline"], rates[reference]["pipeline"], strict=True)]), 2),
                }
            if args.agreement_posts:
                check = make_posts(args.agreement_posts, "agree-", args.image_share, images.base, seed=7, texts=texts)
                labels = {}
                for name, predictor in predictors.items():
                    labels[name] = []
                    bench_predict_path(predictor, check, labels=labels[name])
                for name in predictors:
                    same = sum(a == b for a, b in zip(labels[name], labels[reference], strict=True))
                    results["variants"][name]["label_agreement_vs_first"] = round(same / len(check), 4)
                results["agreement_posts"] = len(check)
            last = list(predictors)[-1]
            harness.predictor, harness.batch_pool = predictors[last], variant_pool(last)
            pipeline_rate = results["variants"][last]["pipeline_posts_per_s"]
            results["latency_variant"] = last
            results["latency"] = []
            for load in (0.5, 0.9) if args.latency_seconds > 0 else ():
                rate = pipeline_rate * load
                n = max(10, int(rate * args.latency_seconds))
                topic = f"latency{int(load * 100)}"
                feed_posts = make_posts(n, f"{topic}-", args.image_share, images.base, seed=3 + int(load * 10), texts=texts)
                say(f"latency at {load:.0%} of max ({rate:.2f} posts/s, {n} posts) ...")
                harness.run_topic(topic, [], feed=lambda b, t, fp=feed_posts, r=rate: produce(b, t, fp, r),
                                  expected=n)
                stored = harness.results(topic, [p["id"] for p in feed_posts])
                lat = [iso_to_epoch(r["processed_at"]) - iso_to_epoch(r["created_at"]) for r in stored if r]
                results["latency"].append({"load": load, "rate": round(rate, 2), "posts": n,
                                           "p50_ms": round(percentile(lat, 0.5) * 1000),
                                           "p99_ms": round(percentile(lat, 0.99) * 1000),
                                           "median_ms": round(statistics.median(lat) * 1000)})
        finally:
            harness.close()
            images.close()
    return emit_results(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
