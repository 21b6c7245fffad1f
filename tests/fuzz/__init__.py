"""Coverage-guided fuzz harnesses (atheris); run them with ``python tests/fuzz/run.py``."""
