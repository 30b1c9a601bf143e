"""Searches that run the pipeline many times: sensitivity ladders, allocation by measurement, speed targets."""
