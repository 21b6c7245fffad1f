"""The soak run is a program (``python -m tests.soak.run``), not a pytest module."""

collect_ignore_glob = ["*"]
