"""``clmlf-monitor run``: one member of a consumer group labelling posts into Redis."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from consumers.config import add_run_arguments, run_config_from_args

EXAMPLES = """\
examples:
  # one member of group "sentiment" reading topic "posts"
  clmlf-monitor run --bootstrap 127.0.0.1:9092 --topic posts --group sentiment \\
      --redis redis://127.0.0.1:6379/0

  # same, configured from the environment (Kubernetes style), own checkpoint, results republished
  KAFKA_BOOTSTRAP_SERVERS=kafka:9092 KAFKA_TOPIC=posts KAFKA_GROUP_ID=sentiment \\
  REDIS_URL=redis://redis:6379/0 CLMLF_CHECKPOINT=/models/mvsa \\
      clmlf-monitor run --output-topic posts.results

  # process what is there, then exit 0 after 10 s without work (scripts, tests)
  clmlf-monitor run ... --exit-when-idle 10s

Delivery is at-least-once and counting exactly-once: an offset is committed only
after its result is in Redis, whose write is idempotent by post id.  Invalid
records go to <topic>.dlq.  SIGTERM/SIGINT finish in-flight posts, commit, exit 0.
Probes: http://HOST:PORT/metrics, /healthz (loop alive), /readyz (assigned + Redis up).
Trend alerts (docs/alerts.md) are evaluated every --alert-interval and once more after the
final commit; several members evaluating at once record each alert once.  Use --no-alerts
where a dedicated `clmlf-monitor alerter` evaluates them.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="consume posts from Kafka, label them, aggregate in Redis",
        description="Run one member of a consumer group: Kafka -> validate (DLQ) -> images -> "
                    "CLMLF micro-batches -> Redis (+ optional output topic), with Prometheus metrics.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = run_config_from_args(args, parser)
    from clmlf.settings import setup_logging

    setup_logging(config.log_level)
    from consumers import log_throttle

    log_throttle.install()
    log = logging.getLogger("clmlf.run")
    from clmlf.model.encoders import hub_offline

    hub_offline()

    from clmlf.serving.cpu_threads import configure_threads
    from consumers.assembly import assemble

    log.info("starting: %s", config.describe())
    configure_threads(config.threads)
    from kafka.errors import KafkaError

    try:
        assembled = assemble(config)
    except (OSError, ValueError) as exc:  # bad checkpoint, cuda without GPU, port in use, ...
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(exc).split())}\n")
    except KafkaError as exc:  # broker unreachable at start: exit 1, the supervisor restarts us
        print(f"{parser.prog}: error: cannot reach Kafka at {config.bootstrap}: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    pipeline = assembled.pipeline

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if assembled.health is not None:
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, assembled.health.port)
    try:
        return assembled.run()
    finally:
        assembled.close()
