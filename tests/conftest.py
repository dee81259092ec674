"""Cross-service tests. Integration tests talk to the real servers of deploy/local (see integration/)."""

from __future__ import annotations

import pytest

# Tests run only when asked for with `-m <marker>`: plain `make test` skips them.
OPT_IN: dict[str, str] = {
    # podman and the images of `make images` (`make containers-test`, which CI runs after `make images`)
    "containers": "needs podman and `make images`: run by `make containers-test`",
    # three more Kafka JVMs and a minute of broker failover per test (`make cluster-test`)
    "cluster": "needs the 3-broker Kafka cluster: run by `make cluster-test`",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `containers` or `cluster` run only when the marker expression names them."""
    asked = config.getoption("markexpr") or ""
    for marker, reason in OPT_IN.items():
        if marker in asked:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)
