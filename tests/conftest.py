"""Cross-service tests. Integration tests talk to the real servers of deploy/local (see integration/)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `containers` (podman, the images of `make images`) run only when asked for with `-m containers`
    (`make containers-test`, which CI runs after `make images`): plain `make test` skips them."""
    if "containers" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="needs podman and `make images`: run by `make containers-test`")
    for item in items:
        if item.get_closest_marker("containers"):
            item.add_marker(skip)
