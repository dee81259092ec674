"""Integration tests of the shared adapters and the services against the real local stack.

Fixtures (`stack_env`, `mirc`, `viewer`, `seeded_studies`, `test_settings`, ...) come from
proxymage_dev.pytest_plugin, registered for the whole workspace.
"""
