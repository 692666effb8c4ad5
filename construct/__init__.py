"""construct package (see README)."""
