"""Shared test setup: the private-systemd fixtures come from sockact.testing."""

pytest_plugins = ["sockact.testing"]
