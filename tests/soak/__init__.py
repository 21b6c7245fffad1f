"""The soak test (``make soak``): a multi-worker server under mixed load, not in ``make test``."""
