"""Scoring: rank the channels of each prunable group (higher score = more important)."""
from .score import CRITERIA, GroupScores, score_groups

__all__ = ["CRITERIA", "GroupScores", "score_groups"]
