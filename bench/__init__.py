"""The benchmark: sockact against gunicorn, uvicorn, Node's cluster and PM2 on one machine.

Run it with `bench/run` (installs what it needs) or `python -m bench` inside the bench venv.
"""
