"""The apps every contender serves: the same routes, the same 13-byte body, the worker's PID in X-Worker."""
