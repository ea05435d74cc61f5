"""The streaming commands from the outside: bad arguments, produce edge cases, the demo end to end."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from pipeline_testlib import CLI

from consumers.commands.produce import iter_lines, record_key


def cli(*argv: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **env))


def test_record_key_is_the_post_id_when_there_is_one():
    assert record_key(b'{"id": "p1", "text": "x"}') == b"p1"
    for line in (b"not json", b'["id"]', b'{"id": 5}', b'{"text": "no id"}', b"\xff\xfe",
                 b'{"id": "sur\\ud800", "text": "x"}',  # finding 1: a lone surrogate crashed produce
                 b'{"id": "a", "n": ' + b"9" * 5000 + b"}",  # finding 2: past the int-digit limit
                 b"[" * 100_000):
        assert record_key(line) is None


def test_iter_lines_keeps_bytes_and_skips_blank_lines():
    import io

    raw = b'{"id": "a"}\r\n\n  \n\xff bad\n{"id": "b"}'
    assert list(iter_lines(io.BytesIO(raw))) == [b'{"id": "a"}', b"\xff bad", b'{"id": "b"}']


@pytest.mark.parametrize("command, names", [
    ("run", ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "REDIS_URL", "--exit-when-idle")),
    ("produce", ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "--input")),
    ("demo", ("--posts", "--duration")),
])
def test_help_teaches_with_examples_without_loading_the_model(command, names):
    probe = "\n".join([
        "import sys",
        "from consumers.cli import main",
        "try:",
        f"    main([{command!r}, '--help'])",
        "except SystemExit as exit:",
        "    assert exit.code == 0, exit.code",
        "assert 'torch' not in sys.modules and 'kafka' not in sys.modules, 'heavy import on --help'",
    ])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and all(name in result.stdout for name in names), result.stdout


@pytest.mark.parametrize("argv, needle", [
    (["run", "--topic", "t", "--group", "g", "--redis", "redis://x:1"], "--bootstrap is required"),
    (["run", "--bootstrap", "h:1", "--topic", "t", "--group", "g", "--redis", "redis://x:1", "--max-batch", "x"],
     "--max-batch: Input should be a valid integer"),
    (["produce", "--topic", "t", "--input", "-"], "--bootstrap is required"),
    (["produce", "--bootstrap", "h:1", "--topic", "t", "--input", "/no/such/file.jsonl"], "cannot open"),
    (["produce", "--bootstrap", "h:1", "--topic", "bad topic", "--input", "-"], "--topic"),
    (["demo", "--duration", "soon"], "--duration"),
    (["demo", "--posts", "0"], "--posts"),
    (["demo", "--max-batch", "0"], "--max-batch"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle):
    result = cli(*argv, KAFKA_BOOTSTRAP_SERVERS="")
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_run_from_environment_with_unreachable_broker_fails_in_one_line(tiny_checkpoint):
    result = cli("run", "--checkpoint", str(tiny_checkpoint), "--metrics-port", "0", timeout=120,
                 KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", KAFKA_TOPIC="t", KAFKA_GROUP_ID="g",
                 REDIS_URL="redis://:s3cret@127.0.0.1:6379/0")
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr  # the Redis password never reaches the log


@pytest.mark.integration
def test_demo_finishes_by_itself_and_leaves_nothing_running():
    result = cli("demo", "--posts", "30", "--duration", "10s", timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    query = [line for line in result.stdout.splitlines() if line.startswith('{"topic": "all"')]
    assert query and json.loads(query[-1])["total"] == 30
    assert "clmlf-monitor query" in result.stdout and "/metrics" in result.stderr
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)", result.stdout).group(1))
    with pytest.raises(OSError):  # the private redis-server is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
