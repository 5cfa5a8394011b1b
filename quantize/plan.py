"""Which weights get quantized: the quantizable set, `--keep` patterns, and the automatic plan that
measures each layer's sensitivity (KL of final logits with only that layer quantized) and keeps the
most sensitive layers at higher precision until the whole model meets a KL budget."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from onnx_edge.quantize.graph_edit import initializer_map, matches, matmul_weights
from onnx_edge.quantize.weight_only import EMBED, LM_HEAD

LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def quantizable(model: onnx.ModelProto, include_tables: bool) -> list[str]:
    names = list(matmul_weights(model))
    if include_tables:
        inits = initializer_map(model)
        names += [n for n in (EMBED, LM_HEAD) if n in inits]
    return names


def manual_keep(names: list[str], patterns) -> set[str]:
    return {n for n in names if matches(n, patterns)}


def units(names: list[str]) -> dict[str, list[str]]:
    """Group weights into the units the search decides on: one per decoder layer, plus the tables."""
    groups: dict[str, list[str]] = {}
    for n in names:
        m = LAYER.match(n)
        key = f"model.layers.{m.group(1)}" if m else "embeddings"
        groups.setdefault(key, []).append(n)
    return groups


@dataclass
class SensitivityPlan:
    budget: float
    unit_kl: dict[str, float]  # KL with only that unit quantized
    kept: list[str]  # units kept at higher precision, most sensitive first
    plan_kl: float  # measured KL of the chosen plan on the calibration windows
    steps: list[dict] = field(default_factory=list)  # (kept units, measured KL) per search step
    met: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def search(names: list[str], base_keep: set[str], budget: float,
           measure: Callable[[set[str]], float], on_step=None) -> SensitivityPlan:
    """`measure(keep)` quantizes everything quantizable except `keep` and returns KL vs the reference."""
    groups = units([n for n in names if n not in base_keep])
    everything = set(names)
    unit_kl = {}
    for unit, members in groups.items():
        unit_kl[unit] = measure(everything - set(members))  # only this unit quantized
        if on_step:
            on_step(f"sensitivity {unit}")
    order = sorted(unit_kl, key=unit_kl.get, reverse=True)

    def keep_top(k: int) -> set[str]:
        return set(base_keep).union(*(groups[u] for u in order[:k]))

    # Keeping more of the most sensitive units lowers the KL (close to monotone), so binary-search the
    # smallest count that meets the budget: log2(units) whole-model measurements instead of one per unit.
    measured = {0: measure(set(base_keep))}
    steps = [{"kept": [], "kl": measured[0]}]
    lo, hi = 0, len(order)  # invariant: top-lo misses the budget (or lo == 0 untested), top-hi meets it
    if measured[0] <= budget:
        hi = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        measured[mid] = measure(keep_top(mid))
        steps.append({"kept": order[:mid], "kl": measured[mid]})
        if on_step:
            on_step(f"plan keeps {mid} units")
        lo, hi = (lo, mid) if measured[mid] <= budget else (mid, hi)
    if hi not in measured:
        measured[hi] = measure(keep_top(hi))
        steps.append({"kept": order[:hi], "kl": measured[hi]})
    kept = order[:hi]
    kl = measured[hi]
    return SensitivityPlan(budget=budget, unit_kl=unit_kl, kept=kept, plan_kl=kl, steps=steps, met=kl <= budget)


def kept_weights(plan: SensitivityPlan, names: list[str]) -> set[str]:
    groups = units(names)
    return set().union(*(groups[u] for u in plan.kept)) if plan.kept else set()


def mean_kl(ref_logps: list[np.ndarray], logps: list[np.ndarray]) -> float:
    """Mean KL(ref || candidate) over every position of the calibration windows."""
    total, count = 0.0, 0
    for r, c in zip(ref_logps, logps):
        total += float(np.sum(np.exp(r) * (r - c)))
        count += r.shape[0]
    return total / count
