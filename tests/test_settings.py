"""Shared CLI helpers: durations, env defaults, redaction, one-line errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from clmlf.settings import OneLineArgumentParser, build_config, env_default, parse_duration, redact_url


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400), ("250ms", 0.25), ("42", 42), (5, 5)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15x", "-5m", "0s", "m", "1 h 2"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_env_default(monkeypatch):
    monkeypatch.setenv("CLMLF_TEST_VALUE", "abc")
    monkeypatch.setenv("CLMLF_TEST_EMPTY", "")
    assert env_default("CLMLF_TEST_VALUE", "x") == "abc"
    assert env_default("CLMLF_TEST_EMPTY", "x") == "x"
    assert env_default("CLMLF_TEST_MISSING", 3) == 3


def test_redact_url_hides_passwords_and_tokens():
    assert redact_url("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("rediss://user:s3cret@db:6380/1") == "rediss://user:***@db:6380/1"
    assert "s3cret" not in redact_url("https://hook.example/x?token=s3cret&a=1")
    assert redact_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


class _Cfg(BaseModel):
    max_batch: int = Field(ge=1)


def test_build_config_exits_2_with_one_line(capsys):
    parser = OneLineArgumentParser(prog="demo")
    with pytest.raises(SystemExit) as info:
        build_config(parser, _Cfg, {"max_batch": 0})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max-batch" in err
    assert build_config(parser, _Cfg, {"max_batch": 4}).max_batch == 4
