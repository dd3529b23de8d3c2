"""Pure-Python twins of the compiled hot path (same API, same bytes)."""
