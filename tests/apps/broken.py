"""An app module that cannot be imported (it imports a missing module on purpose): the worker says so in one line."""

from __future__ import annotations

import this_module_does_not_exist  # type: ignore[import-not-found]  # noqa: F401

app = None
