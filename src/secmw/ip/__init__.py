"""Client addresses behind trusted proxies, and allow/deny lists by address and path."""
