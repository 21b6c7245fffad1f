"""Stores shared by the layers: the Redis client factory, the JWT denylist, sessions."""
