"""``clmlf-monitor produce``: send a JSONL file of posts to a topic, one record per line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import BinaryIO

EXAMPLES = """\
examples:
  clmlf-monitor produce --bootstrap 127.0.0.1:9092 --topic posts --input posts.jsonl
  generate-posts | clmlf-monitor produce --topic posts --input -     # KAFKA_BOOTSTRAP_SERVERS from env

Each non-empty line is sent as-is (bytes unchanged, so malformed lines can be
produced on purpose); the record key is the line's "id" when the line is a JSON
object with a string id that UTF-8 can hold, else no key (an id with a lone
surrogate such as "\\ud800" is sent keyless; consumers dead-letter it).  Prints
how many records were sent.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce", help="send posts from a JSONL file (or stdin) to a Kafka topic",
        description="Send each line of a JSONL file to a Kafka topic (key = post id).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from consumers.config import add_kafka_target_arguments

    add_kafka_target_arguments(parser)
    parser.add_argument("--input", required=True, metavar="FILE", help="JSONL file of posts, '-' = stdin")
    parser.set_defaults(func=run)


def record_key(line: bytes) -> bytes | None:
    """The post id of a line as key bytes, or None for lines that are not objects with a string id
    (or whose id cannot be UTF-8: a lone surrogate).  Never raises: every line is sent."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # ValueError: bad JSON, also integers past 4,300 digits
        return None
    post_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(post_id, str) or not post_id:
        return None
    try:
        return post_id.encode("utf-8")
    except UnicodeEncodeError:
        return None


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from clmlf.process_settings import settings_from_args
    from consumers.config import KafkaTarget

    target = settings_from_args(parser, KafkaTarget, args)
    bootstrap, topic, security = target.bootstrap, target.topic, target.security
    try:
        stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    except OSError as exc:
        parser.error(f"--input: cannot open {args.input}: {exc.strerror}")

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from clmlf.settings import setup_logging

    setup_logging()
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=10,
                                 max_request_size=20 * 1024 * 1024, **security.client_kwargs())
    except KafkaError as exc:
        print(f"clmlf-monitor produce: error: cannot reach {bootstrap}: {exc}", file=sys.stderr)
        return 1
    sent = 0
    try:
        with stream:
            futures = []
            for line in iter_lines(stream):
                futures.append(producer.send(topic, key=record_key(line), value=line))
                sent += 1
                if len(futures) >= 1000:
                    for future in futures:
                        future.get(timeout=30)
                    futures.clear()
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)
    except KafkaError as exc:
        print(f"clmlf-monitor produce: error: send failed after {sent} lines: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.close(timeout=10)
    print(f"sent {sent} records to {topic}", file=sys.stderr)
    return 0
