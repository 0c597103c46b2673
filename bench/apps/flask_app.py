"""The Flask app: GET / returns a small JSON object (Flask serialises a returned dict with jsonify);
the serving PID goes out in X-Worker, as in the hello apps."""

from __future__ import annotations

import os

from flask import Flask

from .payload import PAYLOAD

app = Flask(__name__)


@app.get("/")
def hello() -> tuple[dict[str, str], dict[str, str]]:
    return PAYLOAD, {"X-Worker": str(os.getpid())}
