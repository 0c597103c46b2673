"""An app module that cannot be imported: the worker must say so in one line."""

from __future__ import annotations

import this_module_does_not_exist  # noqa: F401

app = None
