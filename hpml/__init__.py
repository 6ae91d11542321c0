"""hpml."""
