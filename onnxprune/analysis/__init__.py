"""Channel analysis: per-op rules build channel dependency groups over a normalised graph."""
