"""Operator sub-commands (install, status, scale, reload, logs, list) register here."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the operator commands to the CLI; each lives in sockact.ops."""
