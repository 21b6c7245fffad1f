"""What every layer shares: the request view, principals, denials, path patterns, sections."""
