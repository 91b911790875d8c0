"""The project's rule for closed-loop claims: a gap between two settings is real only when it exceeds
twice its standard error over training seeds (the seed-to-seed variance of both settings)."""
import numpy as np


def verdict(a: list[float], b: list[float]) -> str:
    """Gap of the means of `a` and `b` (one reward per training seed) against its standard error."""
    gap = float(np.mean(a) - np.mean(b))
    se = float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))) if min(len(a), len(b)) > 1 else 0.0
    if se == 0:
        return f"{gap:+.1f} / – (one seed: no verdict)"
    word = "**confirmed**" if gap > 2 * se else "**refuted**" if gap < -2 * se else "inconclusive"
    return f"{gap:+.1f} / {se:.1f} = {gap / se:+.1f} standard errors: {word}"
