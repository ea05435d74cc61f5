"""bench/cpu_accounting.py: CPU seconds land on the component whose thread spent them."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def _module():
    path = Path(__file__).resolve().parents[1] / "bench" / "cpu_accounting.py"
    spec = importlib.util.spec_from_file_location("cpu_accounting", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cpu_accounting", module)
    spec.loader.exec_module(module)
    return module


def test_thread_names_map_to_stream_components():
    component_of = _module().component_of
    assert component_of("model-worker") == "model-worker"
    assert component_of("image_3") == "image-stage"
    assert component_of("sink-writer") == "sink-writer"
    assert component_of("consumer-loop") == "consumer-loop"
    assert component_of("Thread-7 (heartbeat)") == "other:Thread"
    assert component_of("kafka-heartbeat-thread-3") == "other:kafka-heartbeat-thread"
    assert component_of(None) == "openmp/native"


def test_a_busy_thread_is_charged_to_its_component_and_a_process_by_pid():
    accounting = _module()
    stop = threading.Event()
    started = threading.Event()

    def spin() -> None:
        started.set()
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass
        stop.wait()

    worker = threading.Thread(target=spin, name="sink-writer")
    worker.start()
    started.wait()
    before = accounting.CpuSample.take({"me": os.getpid()})
    give_up = time.monotonic() + 30
    while not _spent(before, accounting) and time.monotonic() < give_up:  # the spinner's 0.3 s of CPU
        time.sleep(0.02)
    after = accounting.CpuSample.take({"me": os.getpid()})
    stop.set()
    worker.join()
    spent = after.minus(before)
    assert spent["sink-writer"] >= 0.2
    # The process total includes its threads; /proc counts in clock ticks and rounds the thread and
    # the process figures separately, so the two may differ by a tick either way.
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    assert spent["me"] >= spent["sink-writer"] - 2 * tick
    assert spent.get("model-worker", 0.0) == 0.0


def _spent(before, accounting) -> bool:
    return accounting.CpuSample.take().minus(before).get("sink-writer", 0.0) >= 0.25
