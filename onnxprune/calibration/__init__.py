"""Calibration: a few hundred of the user's own inputs, and what data-driven criteria measure on them."""
from .data import Calibration

__all__ = ["Calibration"]
