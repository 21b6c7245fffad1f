"""Apps served by real servers in the integration tests."""
