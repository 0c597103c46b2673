"""The worker runtime: adopts systemd's sockets, serves the app, speaks sd_notify, drains on SIGTERM.

Light to import by design: nothing here imports jinja2, the generator or the CLI.
"""
