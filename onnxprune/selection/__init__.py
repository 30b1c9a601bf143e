"""Selection: turn scores, ratios, targets and guards into a plan's removed channels."""
from .select import Selection, select

__all__ = ["Selection", "select"]
