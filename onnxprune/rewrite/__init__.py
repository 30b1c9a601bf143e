"""Rewrite: apply a plan to the graph by slicing parameters and updating shape-bearing attributes."""
