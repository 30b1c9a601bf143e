"""Recovery: tune the weights a prune leaves so the pruned model reproduces the original."""
