"""``clmlf-monitor demo``: the whole pipeline on this machine, on a generated feed, in about a minute."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  clmlf-monitor demo                          # ~1 minute, embedded default model
  clmlf-monitor demo --posts 200 --duration 30s
  clmlf-monitor demo --checkpoint runs/mvsa   # your own checkpoint

What it does: starts a private Kafka-protocol broker (Tansu) and a private
redis-server on free loopback ports, serves demo images over loopback HTTP,
produces a feed of posts about a few topics (mixed sentiment, images inline and
by URL, a few malformed records for the dead-letter topic), runs the same
pipeline as 'clmlf-monitor run' (with --allow-private-images for the loopback
image server), shows a live table of topic sentiment, then prints a
'clmlf-monitor query' result and stops everything it started.
"""

TABLE_REFRESH = 0.3  # seconds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline locally on a generated feed (about a minute)",
        description="Local end-to-end demo: broker, Redis, image server, feed, pipeline, live table.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=400, metavar="N", help="valid posts in the feed (default 400)")
    parser.add_argument("--duration", default="45s", metavar="DURATION",
                        help="time budget for feeding and processing, after start-up (default 45s)")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--max-batch", type=int, default=None, metavar="N",
                        help="micro-batch size (default: auto from the model, as clmlf-monitor run: 64 for a "
                             "text-only model, 32 for one that reads images)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="P",
                        help="port for /metrics during the demo (default: a free port)")
    parser.add_argument("--seed", type=int, default=7, help="feed seed (default 7)")
    parser.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def load_demo_predictor(checkpoint: str | None, max_batch: int | None) -> Any:
    """The requested or embedded model; without an installed default, a one-line error naming --checkpoint."""
    from clmlf.serving.inference import Predictor

    try:
        return Predictor.from_checkpoint(checkpoint, device="auto", batch_size=max_batch)
    except ValueError as exc:
        if checkpoint is not None:
            raise
        raise SystemExit(f"[demo] {exc}; pass --checkpoint DIR (a checkpoint written by 'clmlf train')") from exc


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from clmlf.settings import parse_duration

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        parser.error(f"--duration: {exc}")
    if not 1 <= args.posts <= 100_000:
        parser.error("--posts must be between 1 and 100000")
    if args.max_batch is not None and not 1 <= args.max_batch <= 1024:
        parser.error("--max-batch must be between 1 and 1024")
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        parser.error(f"--checkpoint: no such directory: {args.checkpoint}")
    from clmlf.model.encoders import hub_offline

    hub_offline()
    from clmlf.settings import setup_logging

    setup_logging(os.environ.get("LOG_LEVEL", "WARNING"))
    from consumers import log_throttle

    log_throttle.install()
    with tempfile.TemporaryDirectory(prefix="clmlf-demo-") as tmp:
        return _demo(args, duration, Path(tmp))


def _demo(args: argparse.Namespace, duration: float, workdir: Path) -> int:
    from consumers.demo_feed import DemoImageServer, generate_feed
    from consumers.local_infra import LocalBroker, LocalRedis, free_port

    topic = "posts"
    _say("starting a private Kafka-protocol broker and redis-server ...")
    with LocalBroker(log_path=workdir / "broker.log") as broker, LocalRedis(log_path=workdir / "redis.log") as redis_:
        broker.create_topics({topic: 3, f"{topic}.dlq": 1})
        images = DemoImageServer()
        try:
            values, stats = generate_feed(args.posts, images.base_url, seed=args.seed)
            _say(f"feed: {stats.posts} posts ({stats.inline_images} inline images, {stats.url_images} by URL) "
                 f"+ {stats.malformed} malformed records")
            _say("loading the model ...")
            predictor = load_demo_predictor(args.checkpoint, args.max_batch)
            _say(f"model {predictor.model_name} on {predictor.device}")
            port = args.metrics_port or free_port()
            return _run_pipeline(args, broker, redis_, topic, values, stats, predictor, port, duration)
        finally:
            images.close()


def _run_pipeline(args, broker, redis_, topic, values, stats, predictor, port, duration) -> int:
    from consumers.assembly import assemble
    from consumers.config import RunConfig
    from monitor.redis_client import COMMAND, redis_client
    from monitor.store import SentimentStore

    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="demo", redis_url=redis_.url,
                       max_batch=args.max_batch, max_wait_ms=50, metrics_port=port, metrics_host="127.0.0.1",
                       allow_private_images=True, session_timeout_ms=6000, image_timeout=3.0)
    assembled = assemble(config, predictor=predictor)
    pipeline = assembled.pipeline
    outcome: dict[str, int] = {}
    loop = threading.Thread(target=lambda: outcome.setdefault("rc", pipeline.run()), name="pipeline")
    loop.start()
    producer_done = threading.Event()
    feeder = threading.Thread(target=_feed, args=(broker.bootstrap, topic, values, duration * 0.6, producer_done),
                              name="feed", daemon=True)
    store = SentimentStore(redis_client(redis_.url, COMMAND))
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    table = LiveTable(sys.stdout, store, assembled.metrics, metrics_url, stats.posts)
    deadline = time.monotonic() + duration + 20  # start-up (group join) is not part of the feed budget
    try:
        while not pipeline.tracker.partitions and time.monotonic() < deadline and loop.is_alive():
            time.sleep(0.1)
        feeder.start()
        while time.monotonic() < deadline and loop.is_alive():
            done = table.draw()
            if producer_done.is_set() and done >= stats.posts:
                break
            time.sleep(TABLE_REFRESH)
        table.draw(final=True)
    except KeyboardInterrupt:
        _say("interrupted")
    finally:
        pipeline.stop()
        loop.join(timeout=60)
        assembled.close()
    _print_query(redis_.url)
    _say(f"metrics were served at {metrics_url} (the demo stopped every process it started)")
    _say("run it for real: clmlf-monitor run --bootstrap HOST:PORT --topic posts --group g --redis URL")
    return outcome.get("rc", 1)


def _feed(bootstrap: str, topic: str, values: list[bytes], seconds: float, done: threading.Event) -> None:
    """Send the feed spread over ``seconds`` (a steady stream, not one burst)."""
    from kafka import KafkaProducer

    from consumers.commands.produce import record_key

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        gap = seconds / max(1, len(values))
        start = time.monotonic()
        for i, value in enumerate(values):
            producer.send(topic, key=record_key(value), value=value)
            delay = start + (i + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.flush(timeout=30)
    except Exception as exc:  # the table shows the shortfall; say why
        logging.getLogger("clmlf.demo").error("feed stopped: %s", exc)
    finally:
        producer.close(timeout=10)
        done.set()


def _print_query(redis_url: str) -> None:
    from consumers.cli import main as monitor_main

    argv = ["query", "--redis", redis_url, "--all", "--window", "15m"]
    print(f"\n$ clmlf-monitor {' '.join(argv)}", flush=True)
    monitor_main(argv)
    argv = ["query", "--redis", redis_url, "--topic", "all", "--window", "15m", "--json"]
    print(f"\n$ clmlf-monitor {' '.join(argv)}", flush=True)
    monitor_main(argv)


class LiveTable:
    """Per-topic sentiment from Redis plus pipeline counters, redrawn in place on a terminal."""

    def __init__(self, out, store, metrics, metrics_url: str, expected: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.store = store
        self.metrics = metrics
        self.metrics_url = metrics_url
        self.expected = expected
        self.started = time.monotonic()
        self._last_plain = 0.0

    def draw(self, final: bool = False) -> int:
        from consumers.demo_feed import TOPICS

        rows = [(t, self.store.window_counts(t, 900)) for t in (*TOPICS, "all")]
        done = next(c.total for t, c in rows if t == "all")
        if not self.tty and not final and time.monotonic() - self._last_plain < 2.0:
            return done
        self._last_plain = time.monotonic()
        lines = [f"clmlf-monitor demo  {time.monotonic() - self.started:5.1f}s   "
                 f"{done}/{self.expected} posts stored   metrics: {self.metrics_url}", ""]
        lines.append(f"{'topic':<20}{'posts':>7}{'positive':>10}{'neutral':>10}{'negative':>10}   mood")
        for topic, counts in rows:
            shares = counts.shares if counts.total else {}
            pos, neu, neg = (shares.get(k, 0.0) for k in ("positive", "neutral", "negative"))
            bar = _bar(pos, neu, neg, 24, self.tty)
            lines.append(f"{topic:<20}{counts.total:>7}{pos:>10.0%}{neu:>10.0%}{neg:>10.0%}   {bar}")
        lines.append("")
        lines.append(f"dead letters: {_sum(self.metrics, 'clmlf_dlq_total'):.0f}   images: "
                     + ", ".join(f"{k}={v:.0f}" for k, v in sorted(_by_label(self.metrics, 'clmlf_image_fetch_total',
                                                                           'outcome').items())))
        text = "\n".join(lines)
        if self.tty:
            self.out.write("\x1b[H\x1b[J" + text + "\n")
        else:
            self.out.write(text + "\n\n")
        self.out.flush()
        return done


def _bar(pos: float, neu: float, neg: float, width: int, color: bool) -> str:
    n_pos, n_neu = round(pos * width), round(neu * width)
    n_neg = max(0, min(width - n_pos - n_neu, round(neg * width)))
    if not color:
        return "+" * n_pos + "." * n_neu + "-" * n_neg
    return f"\x1b[42m{' ' * n_pos}\x1b[47m{' ' * n_neu}\x1b[41m{' ' * n_neg}\x1b[0m"


def _samples(metrics, name: str):
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                yield sample


def _sum(metrics, name: str) -> float:
    return sum(s.value for s in _samples(metrics, name))


def _by_label(metrics, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in _samples(metrics, name):
        key = sample.labels.get(label, "")
        out[key] = out.get(key, 0.0) + sample.value
    return out
