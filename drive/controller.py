"""The controller: key probabilities for w, a, s, d → how long each key is held (the seed's proportional control).

A decision's plan is `hold: dict[str, float]`, seconds each key is held from the decision time:
0 = released, math.inf = held until the next decision.
"""
import math
import numpy as np

from data.labels import KEYS
from train_head.contract import ControllerSettings  # declared once, beside the checkpoint contract


def decide(probs, interval_s: float, settings: ControllerSettings) -> dict[str, float]:
    """Probabilities (4,) for w, a, s, d and the time since the last decision → hold plan.

    Proportional steering: delta = p(a) - p(d); the winning side is held for steer_gain · |delta| · interval,
    at most max_steer · interval (a gain above 1 is for a head that steers too softly; on CarRacing 1 drove
    best). w and s are held until the next decision or released by threshold; when both pass, only the
    more probable one is held (w on a tie). With proportional_gas, w is held for p(w) · interval instead
    (until the next decision from p(w) >= 0.99 on), unless s wins.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.shape != (4,) or not np.isfinite(p).all():
        raise ValueError(f"probs must be 4 finite values for w, a, s, d, got {probs!r}")
    if not interval_s >= 0:
        raise ValueError(f"interval_s must be >= 0, got {interval_s}")
    pw, pa, ps, pd = p
    hold = dict.fromkeys(KEYS, 0.0)

    gas, brake = pw >= settings.gas_threshold, ps >= settings.brake_threshold
    if gas and brake:
        gas, brake = pw >= ps, ps > pw
    if settings.proportional_gas and not brake:
        # the player taps w for part of the time: half throttle in corners, where full throttle spins the car
        hold["w"] = math.inf if pw >= 0.99 else pw * interval_s
    else:
        hold["w"] = math.inf if gas else 0.0
    hold["s"] = math.inf if brake else 0.0

    if settings.proportional:
        strength = settings.steer_gain * abs(pa - pd)
    else:
        a_on, d_on = pa >= settings.steer_threshold, pd >= settings.steer_threshold
        strength = 1.0 if (a_on or d_on) and pa != pd else 0.0
    if strength > 0:
        hold["a" if pa > pd else "d"] = min(strength, settings.max_steer) * interval_s
    return hold
