"""Memory bounded in bytes (issue 11, findings 3 and 4), the units: the decode budget, header pixel
counts, the tracker's byte accounting, and the size settings (property-based for the parser)."""

from __future__ import annotations

import argparse
import io
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pipeline_testlib import wait_until

from clmlf.fetch.decode import decoded_pixels
from consumers.config import BYTE_UNITS, PIXEL_UNITS, add_run_arguments, parse_size, run_config_from_args
from consumers.decode_budget import DecodeBudget
from consumers.offsets import OffsetTracker


def encoded(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt)
    return buf.getvalue()


def test_decoded_pixels_reads_the_header_only():
    assert decoded_pixels(encoded("RGBA", (6300, 6300), "PNG")) == 6300 * 6300
    # JPEG draft mode decodes at 1/8 scale when the shorter side stays >= the target (256)
    assert decoded_pixels(encoded("RGB", (4096, 2048), "JPEG"), target_size=256) == 512 * 256
    assert decoded_pixels(encoded("RGB", (4096, 2048), "JPEG"), target_size=None) == 4096 * 2048
    assert decoded_pixels(b"not an image") == 0 and decoded_pixels(b"") == 0


def test_decode_budget_never_holds_more_than_its_capacity():
    budget = DecodeBudget(100)
    first_in, release_first = threading.Event(), threading.Event()
    order: list[str] = []

    def hold(name: str, pixels: int, gate: threading.Event | None = None) -> None:
        with budget.reserve(pixels):
            order.append(name)
            if gate is not None:
                first_in.set()
                gate.wait(10)

    a = threading.Thread(target=hold, args=("a", 70, release_first))
    a.start()
    assert first_in.wait(10)
    b = threading.Thread(target=hold, args=("b", 60))  # 70 + 60 > 100: waits
    c = threading.Thread(target=hold, args=("c", 10))  # would fit, but waits its turn behind b (FIFO)
    b.start()
    wait_until(lambda: budget.waiting == 1, 10, "b to queue")
    c.start()
    wait_until(lambda: budget.waiting == 2, 10, "c to queue")
    assert order == ["a"] and budget.in_use == 70
    release_first.set()
    for t in (a, b, c):
        t.join(10)
    assert order == ["a", "b", "c"]
    assert budget.peak <= 100 and budget.waits == 2 and budget.in_use == 0


def test_a_reservation_larger_than_the_budget_is_clamped_and_decodes_alone():
    budget = DecodeBudget(50)
    with budget.reserve(10**9) as weight:
        assert weight == 50 and budget.in_use == 50
    with budget.reserve(0) as weight:
        assert weight == 0 and budget.in_use == 0
    assert budget.peak == 50


def test_tracker_counts_bytes_until_finished_or_revoked():
    tracker = OffsetTracker()
    tracker.assign("p0")
    tracker.assign("p1")
    lease0 = tracker.start_owned("p0", 0, nbytes=100)
    tracker.hold(lease0, 0, 50)
    tracker.start_owned("p0", 1, nbytes=10)
    tracker.start_owned("p1", 0, nbytes=1000)
    assert tracker.held_bytes() == 1160
    tracker.finish(lease0, 0)
    assert tracker.held_bytes() == 1010
    tracker.revoke(["p1"])
    assert tracker.held_bytes() == 10
    tracker.hold(lease0, 0, 999)  # already finished: nothing more is held for it
    assert tracker.held_bytes() == 10


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(BYTE_UNITS)))
def test_byte_sizes_parse_with_every_unit(number, unit):
    assert parse_size(f"{number}{unit}", BYTE_UNITS) == number * BYTE_UNITS[unit]
    assert parse_size(f"{number} {unit.lower()}", BYTE_UNITS) == number * BYTE_UNITS[unit]


@given(st.text(max_size=20))
def test_size_parser_returns_a_count_or_one_clear_error(text):
    try:
        value = parse_size(text, PIXEL_UNITS)
    except ValueError as exc:
        assert "invalid size" in str(exc)
    else:
        assert isinstance(value, int) and value >= 0


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clmlf-monitor run")
    add_run_arguments(parser)
    return parser


BASE = ["--bootstrap", "k:9092", "--topic", "t", "--group", "g", "--redis", "redis://r:6379/0"]


def test_memory_settings_defaults_flags_and_environment(monkeypatch):
    parser = run_parser()
    config = run_config_from_args(parser.parse_args(BASE), parser)
    assert (config.max_in_flight_bytes, config.max_decode_pixels, config.max_image_pixels) == (
        1 << 30, 48_000_000, 40_000_000)
    monkeypatch.setenv("CLMLF_MAX_IN_FLIGHT_BYTES", "256MiB")
    monkeypatch.setenv("CLMLF_MAX_DECODE_PIXELS", "20M")
    parser = run_parser()
    config = run_config_from_args(parser.parse_args([*BASE, "--max-image-pixels", "12M"]), parser)
    assert (config.max_in_flight_bytes, config.max_decode_pixels, config.max_image_pixels) == (
        256 << 20, 20_000_000, 12_000_000)


@pytest.mark.parametrize("args, fragment", [
    (["--max-image-pixels", "60M"], "must be at most --max-decode-pixels"),
    (["--max-in-flight-bytes", "lots"], "invalid size"),
    (["--max-in-flight-bytes", "1KiB"], "max-in-flight-bytes: Input should be greater than or equal to 1048576"),
])
def test_bad_memory_settings_exit_2_with_one_line(args, fragment, capsys):
    parser = run_parser()
    with pytest.raises(SystemExit) as stop:
        run_config_from_args(parser.parse_args([*BASE, *args]), parser)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert fragment in err
