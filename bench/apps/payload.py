"""The framework apps' response: one small JSON object, and the exact bytes each framework sends for it.

Standalone (no framework import), so the harness can check a response without loading FastAPI or Flask.
"""

from __future__ import annotations

import json

PAYLOAD = {"message": "hello, world"}
# Both frameworks serialise compactly; Flask's JSON provider ends the body with a newline.
FASTAPI_BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
FLASK_BODY = FASTAPI_BODY + b"\n"
