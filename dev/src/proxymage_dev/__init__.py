"""Proxymage's developer tools, a dev-only workspace member (not in the runtime wheels or the images).

`proxymage-dev` (cli), synthetic patients and studies (synthetic, seed_pacs, scenario), the benchmarks of
`make bench` (bench), the pytest plugin of the workspace's tests (pytest_plugin, registered through the
`pytest11` entry point) and test helpers (testing, viewer_probe).
"""
