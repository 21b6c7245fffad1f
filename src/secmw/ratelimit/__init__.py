"""Rate limiting: settings, rules, windows and the memory and Redis storages."""
