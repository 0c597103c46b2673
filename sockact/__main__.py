"""``python -m sockact``: the worker runtime goes straight to its own entry, everything else to the CLI."""

from __future__ import annotations

import sys


def _main() -> int:
    if sys.argv[1:2] == ["run"]:
        # Workers start here on every (re)start: skip the CLI and its imports entirely.
        from .runtime.main import main as run_main

        return run_main(sys.argv[2:])
    from .cli import main

    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
