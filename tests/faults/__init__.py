"""The Redis fault suite (``make faults``): real Redis, Cluster and Sentinel under load."""
