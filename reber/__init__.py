"""reber."""
