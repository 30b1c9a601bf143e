"""Fresh names for what a rewrite adds: a base name, made unique against the names already taken."""
from __future__ import annotations


def fresh(base: str, taken: set[str]) -> str:
    """`base` if it is free, else base_2, base_3...; the name returned is added to `taken`."""
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name
