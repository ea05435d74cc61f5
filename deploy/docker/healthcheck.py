"""Container HEALTHCHECK: GET $CLMLF_HEALTHCHECK_URL (default the consumer's /healthz); exit 0 iff 2xx.

Standard library only, so the slim runtime image needs no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9100/healthz"


def check(url: str, timeout: float = 4.0) -> int:
    """Return the process exit status for one probe of ``url``: 0 healthy, 1 not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from env
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(check(os.environ.get("CLMLF_HEALTHCHECK_URL") or DEFAULT_URL))
