"""How a bench ends: its results as JSON on stdout (and in a file when asked), with the closing load average."""

from __future__ import annotations

import json
import os
from pathlib import Path


def emit_results(results: dict, json_path: Path | None) -> int:
    """Stamp the 1-min load average at the end, print ``results``, write them to ``json_path`` too; returns 0."""
    results["load_average_end"] = round(os.getloadavg()[0], 1)
    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text)
    return 0
