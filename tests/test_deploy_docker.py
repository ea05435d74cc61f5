"""Dockerfiles, checked statically (no Docker here): pinned bases, multi-stage slim runtime, non-root,
HEALTHCHECK, no URL ADD, apt hygiene, files they copy exist and pass .dockerignore; the healthcheck script."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deploy_testlib import app_env_vars
from http_testlib import LoopbackServer, QuietHandler

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
IMAGE_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",
             "DEBIAN_FRONTEND", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "MPLCONFIGDIR",
             "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CLMLF_HEALTHCHECK_URL", "CUDA_CACHE_PATH"}
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "git", "curl", "wget")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Instructions grouped by stage; comments dropped, line continuations joined."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif keyword == "ARG" and not stages:
            continue  # global build args before the first FROM
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    return request.param, parse_dockerfile(DOCKERFILES[request.param])


def test_parser_handles_continuations_and_stages(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("# c\nARG X=1\nFROM a:1 AS one\nRUN echo \\\n  hi\nFROM b:2\nUSER 1\n")
    stages = parse_dockerfile(path)
    assert [(s.base, s.name) for s in stages] == [("a:1", "one"), ("b:2", None)]
    assert stages[0].instructions == [("RUN", "echo  hi")]


def test_base_images_are_pinned(dockerfile: tuple[str, list[Stage]]) -> None:
    kind, stages = dockerfile
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{kind}: unpinned base {stage.base}"
        assert "$" not in stage.base, f"{kind}: base image from a build arg cannot be linted"
    expected = "python" if kind == "cpu" else "nvidia/cuda"
    assert all(s.base.startswith(expected) for s in stages)
    if kind == "cuda":
        assert all("-runtime-" in s.base for s in stages)


def test_multi_stage_with_slim_non_root_runtime(dockerfile: tuple[str, list[Stage]]) -> None:
    kind, stages = dockerfile
    assert [s.name for s in stages] == ["builder", "runtime"]
    runtime = stages[-1]
    runs = " ".join(runtime.all("RUN"))
    assert "pip install" not in runs, f"{kind}: the runtime stage must not build or install packages"
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", runs), f"{kind}: {tool} in runtime"
    assert any(args.startswith("--from=builder /opt/venv") for args in runtime.all("COPY"))
    users = runtime.all("USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "numeric high UID so runAsNonRoot can verify it"
    last_user = max(i for i, (kw, _) in enumerate(runtime.instructions) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in runtime.instructions[last_user:]), "RUN after USER runs as the app user"
    assert 'useradd --system --uid 10001' in runs


def test_healthcheck_entrypoint_and_stop_signal(dockerfile: tuple[str, list[Stage]]) -> None:
    kind, stages = dockerfile
    runtime = stages[-1]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "--interval=" in healthcheck and "--timeout=" in healthcheck and "--start-period=" in healthcheck
    assert "/usr/local/bin/clmlf-healthcheck" in healthcheck
    assert any(a.startswith("deploy/docker/healthcheck.py /usr/local/bin/clmlf-healthcheck")
               for a in runtime.all("COPY"))
    assert runtime.all("ENTRYPOINT") == ['["clmlf-monitor"]']
    assert runtime.all("CMD") == ['["run"]']
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "clmlf-monitor" in scripts


def test_no_remote_add_and_apt_hygiene(dockerfile: tuple[str, list[Stage]]) -> None:
    kind, stages = dockerfile
    text = DOCKERFILES[kind].read_text()
    assert not re.search(r"^\s*ADD\s", text, re.M), f"{kind}: use COPY (ADD fetches URLs and unpacks archives)"
    assert not re.search(r"(curl|wget)[^\n|]*\|\s*(ba)?sh", text), f"{kind}: no curl | sh"
    for stage in stages:
        for run in stage.all("RUN"):
            if "apt-get install" in run:
                assert "--no-install-recommends" in run and "-y" in run, run
                assert "rm -rf /var/lib/apt/lists/*" in run, f"{kind}: apt lists left in the layer"
                assert "apt-get update" in run, f"{kind}: update and install in one layer"
            assert "apt-get upgrade" not in run and "sudo" not in run


def test_pip_leaves_no_cache_and_torch_comes_from_the_right_index(dockerfile: tuple[str, list[Stage]]) -> None:
    kind, stages = dockerfile
    builder = stages[0]
    env = " ".join(builder.all("ENV"))
    assert "PIP_NO_CACHE_DIR=1" in env
    args = dict(a.split("=", 1) for a in builder.all("ARG") if "=" in a)
    expected_index = "https://download.pytorch.org/whl/cpu" if kind == "cpu" else "https://download.pytorch.org/whl/cu"
    assert args["TORCH_INDEX_URL"].startswith(expected_index)
    assert args["TORCH_VERSION"] == "2.14.1" and args["TORCHVISION_VERSION"] == "0.29.1"
    runs = builder.all("RUN")
    torch_install = next(r for r in runs if "torch==" in r)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_install
    # torch first (right build), then the package, whose torch pin must accept that version.
    assert runs.index(torch_install) < next(i for i, r in enumerate(runs) if r.startswith("pip install ."))


def test_checkpoint_is_baked_only_by_build_argument(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    runtime = stages[-1]
    assert "CHECKPOINT_DIR=" in runtime.all("ARG")
    copy = next(a for a in runtime.all("COPY") if "CHECKPOINT_DIR" in a)
    source = re.search(r"\$\{CHECKPOINT_DIR:-([^}]+)\}", copy).group(1)
    assert (REPO / source).is_dir() and copy.endswith("/models/clmlf/")
    env = " ".join(runtime.all("ENV"))
    assert "CLMLF_CHECKPOINT=${CHECKPOINT_DIR:+/models/clmlf}" in env
    assert "HF_HUB_OFFLINE=1" in env




def test_image_environment_names_are_known(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    known = app_env_vars() | IMAGE_ENV
    for stage in stages:
        for env in stage.all("ENV"):
            names = {token.split("=", 1)[0] for token in shlex.split(env) if "=" in token}
            assert names <= known, names - known


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    allowed = True
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            allowed = negate
    return allowed


def _copy_sources(stages: list[Stage]) -> Iterator[str]:
    for stage in stages:
        for args in stage.all("COPY"):
            tokens = [t for t in args.split() if not t.startswith("--")]
            for source in tokens[:-1]:
                if "--from=" in args:
                    continue
                yield re.sub(r"\$\{CHECKPOINT_DIR:-([^}]+)\}", r"\1", source)


def test_copied_files_exist_and_pass_dockerignore(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allowlist"
    sources = list(_copy_sources(stages))
    assert {"pyproject.toml", "clmlf", "contract", "consumers", "monitor"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert _dockerignore_allows(source, patterns), f"{source} is excluded by .dockerignore"
    for secret_like in (".git", ".venv", ".venv-tools", "runs", "tests"):
        assert not _dockerignore_allows(secret_like, patterns), secret_like
    stage_names = {s.name for s in stages}
    for stage in stages:
        for args in stage.all("COPY"):
            match = re.search(r"--from=(\S+)", args)
            assert not match or match.group(1) in stage_names


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!clmlf/", "**/__pycache__"]
    assert _dockerignore_allows("clmlf", patterns)
    assert not _dockerignore_allows("secrets.env", patterns)


# ------------------------------------------------------------------ the HEALTHCHECK script

def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("clmlf_healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def probe_server() -> Iterator[str]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

    with LoopbackServer(Handler) as server:
        yield server.base


def test_healthcheck_script_exit_codes(probe_server: str) -> None:
    healthcheck = _load_healthcheck()
    assert healthcheck.check(f"{probe_server}/healthz") == 0
    assert healthcheck.check(f"{probe_server}/unhealthy") == 1
    assert healthcheck.DEFAULT_URL == "http://127.0.0.1:9100/healthz"


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _load_healthcheck().check(f"http://127.0.0.1:{port}/healthz", timeout=1.0) == 1


# ------------------------------------------------------------------ what `pip install .` puts in the image

@pytest.mark.slow
def test_wheel_installed_by_the_images_carries_every_package_data_file(tmp_path: Path) -> None:
    """The runtime image has no source tree: data files (embedded model, Lua scripts, ...) must be in the wheel."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy of exactly what the Dockerfiles COPY (setuptools writes build/ next to the source).
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in ("clmlf", "contract", "consumers", "monitor"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
         str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False, timeout=240, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("clmlf_monitor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(REPO).as_posix()
        for package in ("clmlf", "contract", "consumers", "monitor")
        for p in (REPO / package).rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert expected, "no package data found at all: the scan is broken"
    assert expected - names == set(), "package data missing from the wheel (pyproject package-data patterns)"
    assert {"clmlf/cli.py", "contract/posts.py", "consumers/cli.py", "consumers/commands/run.py"} <= names
