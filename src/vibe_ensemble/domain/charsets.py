"""Sets of characters as sorted, merged, inclusive code-point ranges (the alphabet of lease globs).

`domain/globs.py` parses character classes into these sets; `domain/overlap.py` intersects
them along the product of two patterns' automata.
"""

from __future__ import annotations

MAX_CODEPOINT = 0x10FFFF
_SLASH = ord("/")

Ranges = tuple[tuple[int, int], ...]


def normalise(ranges: list[tuple[int, int]]) -> Ranges:
    """Sort and merge inclusive code-point ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return tuple(out)


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def pick(ranges: Ranges) -> str:
    """A readable character from a non-empty set (for witness paths)."""
    for preferred in "xa0_":
        c = ord(preferred)
        if any(lo <= c <= hi for lo, hi in ranges):
            return preferred
    for lo, hi in ranges:
        for c in range(max(lo, 0x21), min(hi, 0x7E) + 1):
            return chr(c)
    return chr(ranges[0][0])


ANY: Ranges = ((0, MAX_CODEPOINT),)
NOT_SLASH: Ranges = complement(((_SLASH, _SLASH),))
SLASH: Ranges = ((_SLASH, _SLASH),)

POSIX: dict[str, list[tuple[int, int]]] = {
    "alnum": [(48, 57), (65, 90), (97, 122)],
    "alpha": [(65, 90), (97, 122)],
    "blank": [(9, 9), (32, 32)],
    "cntrl": [(0, 31), (127, 127)],
    "digit": [(48, 57)],
    "graph": [(33, 126)],
    "lower": [(97, 122)],
    "print": [(32, 126)],
    "punct": [(33, 47), (58, 64), (91, 96), (123, 126)],
    "space": [(9, 13), (32, 32)],
    "upper": [(65, 90)],
    "xdigit": [(48, 57), (65, 70), (97, 102)],
}
