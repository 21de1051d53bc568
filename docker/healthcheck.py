"""Container HEALTHCHECK: exit 0 when the service's ``/readyz`` answers 200, 1 otherwise.

Python's urllib rather than curl, so the image needs no extra package. Readiness, not liveness: a container
whose model is still loading or that is draining after SIGTERM is reported unhealthy to Docker, which is what
an orchestrator without separate probes (compose, plain Docker) should route by.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("ACULA_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "3"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (503 not ready) is a URLError
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
