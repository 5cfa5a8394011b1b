"""A folder's `manifest.quantization`, typed: how its weights were quantized (by `onnx-edge quantize` or by the
GGUF block import), what that cost, and the one label every printout of it uses (quantize's report, `info`,
`compare`). Read tolerantly: a record that an older or stopped run wrote may lack any field."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

QUANTIZE = "quantize"
GGUF_BLOCKS = "gguf_blocks"
# Fields only one method writes; the other method's record leaves them out of the manifest.
_ONLY = {QUANTIZE: ("config", "kept_patterns", "sensitivity", "calibration_text", "table_block_size",
                    "cpu_dependent", "quality"),
         GGUF_BLOCKS: ("gguf", "gguf_sha256", "accuracy_level", "exact", "imported")}


@dataclass(frozen=True)
class QuantRecord:
    method: str = QUANTIZE  # older quantize records have no method
    # initializer -> its precision ("int4", "fp32", ...) or, for gguf_blocks, its import plan {"status", "qtype", ...}
    weights: dict[str, Any] = field(default_factory=dict)
    size_mb: dict[str, float] = field(default_factory=dict)  # before, after
    # quantize
    config: dict[str, Any] = field(default_factory=dict)  # every QuantConfig option, plus auto_keep
    kept_patterns: tuple[str, ...] = ()
    sensitivity: dict[str, Any] | None = None  # quantize.plan.SensitivityPlan
    calibration_text: str | None = None
    table_block_size: int | None = None
    cpu_dependent: bool = False  # its int8 format's quality depends on the CPU's int8 kernels
    quality: dict[str, Any] | None = None  # evaluate.quality's report, plus measured_on
    # gguf_blocks
    gguf: str | None = None
    gguf_sha256: str | None = None
    accuracy_level: int | None = None
    exact: bool = False
    imported: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> QuantRecord:
        """Whatever the manifest holds: fields of the wrong type read as absent."""
        data = data if isinstance(data, dict) else {}

        def get(name: str, kind, default=None):
            value = data.get(name)
            return value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) else default

        patterns = get("kept_patterns", list, [])
        return cls(method=get("method", str, QUANTIZE), weights=get("weights", dict, {}),
                   size_mb=get("size_mb", dict, {}), config=get("config", dict, {}),
                   kept_patterns=tuple(p for p in patterns if isinstance(p, str)),
                   sensitivity=get("sensitivity", dict), calibration_text=get("calibration_text", str),
                   table_block_size=get("table_block_size", int), cpu_dependent=get("cpu_dependent", bool, False),
                   quality=get("quality", dict), gguf=get("gguf", str), gguf_sha256=get("gguf_sha256", str),
                   accuracy_level=get("accuracy_level", int), exact=get("exact", bool, False),
                   imported=get("imported", int))

    def to_dict(self) -> dict[str, Any]:
        skip = _ONLY[GGUF_BLOCKS if self.method == QUANTIZE else QUANTIZE]
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def weight_precisions(self) -> Counter:
        """How many weights ended at each precision (a GGUF import's: its block types, fp32 where kept)."""
        if self.method != GGUF_BLOCKS:
            return Counter(str(p) for p in self.weights.values())
        return Counter(str(w.get("qtype")) if w.get("status") == "imported" else "fp32"
                       for w in self.weights.values() if isinstance(w, dict))

    @property
    def complete(self) -> bool:
        """Whether the run that wrote the record finished (it records the sizes last)."""
        sizes = [self.size_mb.get(k) for k in ("before", "after")]
        return bool(self.weights) and all(isinstance(s, (int, float)) and s > 0 for s in sizes)

    def label(self, precision: str) -> str:
        """One line: 'int4 weight_only rtn b32 asym acc4 (+2 kept)', 'int8 dynamic u8u8', 'gguf Q4_0/Q8_0 blocks
        (exact)'. `precision`: the manifest's, for a record that does not say."""
        if self.method == GGUF_BLOCKS:
            kinds = sorted({str(w.get("qtype")) for w in self.weights.values()
                            if isinstance(w, dict) and w.get("status") == "imported"})
            return f"gguf {'/'.join(kinds) or precision} blocks" + (" (exact)" if self.exact else "")
        cfg = self.config
        parts = [str(cfg.get("precision") or precision), cfg.get("scheme")]
        if cfg.get("scheme") == "weight_only":
            block, symmetric, level = cfg.get("block_size"), cfg.get("symmetric"), cfg.get("accuracy_level")
            parts += [cfg.get("algorithm"), block and f"b{block}",
                      None if symmetric is None else "sym" if symmetric else "asym", level and f"acc{level}"]
        elif cfg.get("scheme") == "static":
            parts.append(cfg.get("calibration"))
        parts.append(cfg.get("int8_format"))
        label = " ".join(str(p) for p in parts if p)
        kept = (self.sensitivity or {}).get("kept") or cfg.get("keep")
        return label + (f" (+{len(kept)} kept)" if isinstance(kept, (list, tuple)) and kept else "")
