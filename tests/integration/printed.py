"""Comparing a regenerated text with a committed one at the precision it was printed to.

A number may differ by one unit in its last printed digit: an optimiser's or a bootstrap's last
digits depend on the CPU's floating-point library (a fresh clone on an AMD EPYC printed A=5.226
where an Intel Xeon printed 5.225). The words between the numbers must match exactly.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:e([-+]\d+))?")


def differs(new: str, old: str) -> str:
    """'' when new and old have the same words and numbers that agree to one unit in their last
    printed digit; else the first difference."""
    nums_new, nums_old = list(NUMBER.finditer(new)), list(NUMBER.finditer(old))
    words_new, words_old = NUMBER.sub("#", new), NUMBER.sub("#", old)
    if words_new != words_old or len(nums_new) != len(nums_old):
        line = next((a for a, b in zip(words_new.splitlines(), words_old.splitlines()) if a != b), "")
        return f"text differs near {line[:120]!r}"
    for a, b in zip(nums_new, nums_old):
        digits = max(len(a.group(1) or ""), len(b.group(1) or ""))
        exp = int(b.group(2) or 0)
        if abs(float(a.group(0)) - float(b.group(0))) > 1.0001 * 10.0 ** (exp - digits):
            return f"{a.group(0)} against {b.group(0)}"
    return ""
