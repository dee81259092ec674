"""The service images' HEALTHCHECK: GET /healthz on the service's health port, exit 0 when it answers 200.

The port is PROXYMAGE_HEALTH_PORT, else the service's default (the `health_port` of its Settings, checked by
tests/containers/test_images.py). Standard library only: it must stay cheap, it runs every few seconds.
"""

import os
import sys
import urllib.request

DEFAULT_PORTS = {"identity-matcher": 8101, "study-fetcher": 8102, "expert-notifier": 8103, "gateway": 8080}


def main() -> int:
    service = os.environ.get("PROXYMAGE_SERVICE", "")
    port = os.environ.get("PROXYMAGE_HEALTH_PORT") or str(DEFAULT_PORTS.get(service, 0))
    if port == "0":
        print(f"healthcheck: no health port for service {service!r}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
