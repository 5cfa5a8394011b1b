"""Architecture specs: how an HF `model_type` maps onto our decoder graph, as plain data.

Torch-free: export reads the weight map, runtime reads only the shape (via the manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from onnx_edge.errors import UnsupportedModelError

# Rope types whose tables are fixed over the export's context (max_position_embeddings). transformers'
# dynamic NTK rescales only past max_position_embeddings, so within it it is the default rope exactly;
# longrope switches tables at original_max_position_embeddings and is refused until exported as such.
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
# Config fields that live in rope_parameters (transformers 5) or at the top level / rope_scaling (4.x).
ROPE_FIELDS = ("rope_type", "rope_theta", "partial_rotary_factor")
# transformers' ACT2FN names of the functions ArchSpec.activation emits: nn.SiLU under two names, and the
# tanh GELU (FastGelu) as gelu_new and PyTorch's approximate="tanh". The erf GELU ("gelu") is another function.
ACTIVATION_NAMES = {"silu": ("silu", "swish"), "gelu_tanh": ("gelu_new", "gelu_pytorch_tanh"),
                    # gpt_neox: the erf GELU (nn.functional.gelu, approximate="none"), transformers' "gelu".
                    "gelu": ("gelu",)}
# ArchSpec.qk_norm values both graph builders implement.
QK_NORMS = ("none", "per_head", "full_width")
# ArchSpec.block, how a layer wires its norms and residuals:
# - pre_norm (llama): each sublayer's input normed;
# - post_norm (olmo2): its output normed before the residual add (canonical attn_norm / mlp_norm are those);
# - sandwich (gemma2 / gemma3): both, four norms a layer (attn_norm, attn_post_norm, mlp_norm, mlp_post_norm):
#   x + post(attn(pre(x))), then the same around the MLP;
# - parallel (gpt_neox use_parallel_residual): both sublayers read the same x, x + attn(attn_norm(x)) + mlp(mlp_norm(x)).
BLOCKS = ("pre_norm", "post_norm", "sandwich", "parallel")
# --- gemma family ---
# ArchSpec.norm_scale: RMSNorm multiplies by its weight w, or by (1 + w) (gemma; folded into the canonical
# weight by export/weights.py: transformers adds 1.0 in fp32 too, so the stored number is the same).
NORM_SCALES = ("weight", "one_plus_weight")
# ArchSpec.embed_scale: the gathered embedding rows as they are, or times sqrt(hidden_size) (gemma; a multiply
# in the graph, not folded into the table, since a tied lm_head reads the unscaled table).
EMBED_SCALES = ("none", "sqrt_hidden")
# ArchSpec.qkv_layout: a packed qkv weight's output rows as [q | k | v] (phi3, gpt2), or per head [q_h, k_h, v_h]
# for each head h (gpt_neox: it views the projection as (.., heads, 3 * head_dim) and then chunks); export/weights.py
# reorders "per_head" into [q | k | v], so both graphs split one layout.
QKV_LAYOUTS = ("packed", "per_head")


@dataclass(frozen=True)
class GGUFLayout:
    """How a GGUF file of this family stores the matrices block import maps (q/k/v and gate/up apart)."""

    architecture: str  # the file's general.architecture
    # llama.cpp permuted the q/k rows and transformers' GGUF loader un-permutes them (LlamaTensorProcessor).
    permuted_qk: bool


@dataclass(frozen=True)
class ConfigRule:
    """A config field the family's graph implements only for the `allowed` values (every item of a list
    field); check_config refuses anything else before a weight loads. `why` ends the message."""

    field: str
    allowed: tuple
    why: str = ""


@dataclass(frozen=True)
class ArchSpec:
    """What differs between decoder architectures. `weights` maps our canonical names to HF state-dict
    names; `{i}` is the layer index. Canonical names with '.bias' are optional."""

    model_type: str
    norm: str  # "rms" | "layer"
    positions: str  # "rope" | "learned"
    mlp: str  # "gated" (act(gate) * up) | "plain" (act(fc))
    activation: str  # "silu" | "gelu_tanh"
    weights: dict[str, str]
    # Required, so that a new family states them: export/fused.py writes this family (graph="auto" picks it),
    # and the GGUF layout `export --precision gguf` imports blocks from (None: refused).
    fused: bool
    gguf: GGUFLayout | None
    # HF stores some weights as (in, out) Conv1D instead of (out, in) Linear.
    conv1d: bool = False
    # State-dict entries that are buffers, not weights.
    ignore_suffixes: tuple[str, ...] = ()
    # Config field aliases: canonical name -> HF config key (normalized-config adapter). `sliding_window`
    # only where the family's attention reads it on every layer (a stray one is ignored, as transformers does),
    # or, with `layer_types` beside it (gemma family), on the layers that names sliding_attention.
    config_keys: dict[str, str] = field(default_factory=dict)
    # Config values beyond the activation and rope type (config_rules adds those) the graph implements.
    config_rules: tuple[ConfigRule, ...] = ()
    # RMSNorm of q and k before rotary: "none", or "per_head" (qwen3: weight (head_dim,), over each head's
    # channels; canonical weights layers.{i}.q_norm / k_norm), or "full_width" (olmo2: weight (heads*head_dim,),
    # over the whole q / k projection before the split into heads).
    qk_norm: str = "none"
    # see BLOCKS
    block: str = "pre_norm"
    # gemma family: see NORM_SCALES / EMBED_SCALES.
    norm_scale: str = "weight"
    embed_scale: str = "none"
    # --- phi3 longrope ---
    # transformers' longrope (Phi-3.5-mini, Phi-3-128k, Phi-4-mini): short factors while a call's largest
    # position id is below original_max_position_embeddings, long factors for the whole call past it. The
    # graphs carry both tables and switch per call exactly so (ModelShape.longrope_original_max).
    longrope: bool = False
    # --- gpt_neox ---
    # See QKV_LAYOUTS.
    qkv_layout: str = "packed"
    # Checkpoint-file names transformers renames on load -> the state-dict name the weight map places
    # (gpt_neox: Pythia files store the head as embed_out.weight, loaded as lm_head.weight).
    checkpoint_aliases: dict[str, str] = field(default_factory=dict)
    # Rope fields a family's config names its own way (gpt_neox: rotary_pct, rotary_emb_base) -> the value
    # transformers takes when the config lacks both spellings.
    rope_defaults: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.qkv_layout not in QKV_LAYOUTS:  # gpt_neox
            raise ValueError(
                f"{self.model_type}: qkv_layout {self.qkv_layout!r} is not one of {', '.join(QKV_LAYOUTS)}")
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(
                f"{self.model_type}: activation {self.activation!r} is not one of {', '.join(ACTIVATION_NAMES)}")
        if self.qk_norm not in QK_NORMS:
            raise ValueError(f"{self.model_type}: qk_norm {self.qk_norm!r} is not one of {', '.join(QK_NORMS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"{self.model_type}: block {self.block!r} is not one of {', '.join(BLOCKS)}")
        for name, allowed in (("norm_scale", NORM_SCALES), ("embed_scale", EMBED_SCALES)):  # gemma family
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{self.model_type}: {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ModelShape:
    """Numbers the graph and the runtime need, normalized across architectures."""

    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    context_length: int
    norm_eps: float
    rotary_dim: int
    rope_theta: float
    rope_type: str
    sliding_window: int | None
    tie_word_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None
    # longrope: the switch position (original_max_position_embeddings); None for every other rope type.
    longrope_original_max: int | None = None
    # --- granite / smollm3 (defaults: llama's graph; older manifests lack them) ---
    # granite's scalars: embeddings x embedding_multiplier, each sublayer output x residual_multiplier before
    # its residual add, attention_scale in place of 1/sqrt(head_dim) (None), logits / logits_scaling.
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_scale: float | None = None
    logits_scaling: float = 1.0
    # smollm3: per layer, 1 = rotary, 0 = none (NoPE); None = every layer rotates.
    rope_layers: list[int] | None = None
    # --- gemma family ---
    # gemma2: tanh soft-capping, cap * tanh(x / cap), of the attention scores (after the scale, before the mask)
    # and of the logits; None = none. sliding_layers: per layer, 1 = slides over sliding_window (layer_types);
    # None = sliding_window (if any) on every layer.
    attn_softcap: float | None = None
    final_softcap: float | None = None
    sliding_layers: list[int] | None = None
    # gemma3: the rope tables stack [full-attention rows; sliding-layer rows] (torch_model.rope_tables), and
    # the sliding layers read the second half.
    local_rope: bool = False

    def uses_rope(self, layer: int) -> bool:
        return self.rotary_dim > 0 and (self.rope_layers is None or bool(self.rope_layers[layer]))

    def window(self, layer: int) -> int | None:
        """Layer `layer`'s attention window (None: full causal attention)."""
        return self.sliding_window if self.sliding_layers is None or self.sliding_layers[layer] else None

    def uses_local_rope(self, layer: int) -> bool:
        """gemma3: layer `layer` reads the second (sliding-layer) half of the stacked rope tables."""
        return self.local_rope and bool(self.sliding_layers[layer])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelShape":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


_DEFAULT_KEYS = {
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "context_length": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "activation": "hidden_act",
}


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def rope_layer_types(config: dict[str, Any]) -> list[str]:
    """gemma3 (transformers 5): rope_parameters holds one set per layer type, {"full_attention": {...},
    "sliding_attention": {...}}; [] for the flat layout of every other family."""
    params = config.get("rope_parameters")
    nested = isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values())
    return sorted(params) if nested else []


def rope_parameters(config: dict[str, Any], layer_type: str = "full_attention") -> dict[str, Any]:
    """The rope settings of either layout: transformers 5's `rope_parameters`, or 4.x's rope_scaling plus
    top-level rope_theta / partial_rotary_factor (the fallback where rope_parameters lacks one, as in 5)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if rope_layer_types(config):  # gemma3: the set of `layer_type` (full_attention: the model's main one)
        params = dict(params.get(layer_type) or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params["partial_rotary_factor"] = params.get("partial_rotary_factor") or config.get("partial_rotary_factor") or 1.0
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def family_rope_fields(spec: ArchSpec, config: dict[str, Any]) -> dict[str, Any]:
    """gpt_neox: `config` with its own rope field names (config_keys "partial_rotary_factor" / "rope_theta",
    e.g. rotary_pct) copied to the standard ones, and spec.rope_defaults where it has neither, as transformers
    reads them; any other family's config unchanged."""
    keys = {name: spec.config_keys[name] for name in ("partial_rotary_factor", "rope_theta") if name in spec.config_keys}
    if not keys:
        return config
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    out = dict(config)
    for name, key in keys.items():
        if params.get(name) is None and out.get(name) is None:
            value = config.get(key, spec.rope_defaults.get(name))
            if value is not None:
                out[name] = value
    return out


def config_rules(spec: ArchSpec) -> tuple[ConfigRule, ...]:
    """Every config value `spec`'s graph implements: its activation, its rope types, then the family's own."""
    keys = {**_DEFAULT_KEYS, **spec.config_keys}
    rules = (ConfigRule(keys["activation"], ACTIVATION_NAMES[spec.activation]),)
    if spec.positions == "rope":
        rope_types = ROPE_TYPES + (("longrope",) if spec.longrope else ())
        rules += (ConfigRule("rope_type", rope_types, "the graph's rotary tables are fixed at export"),)
    return rules + spec.config_rules


def check_config(spec: ArchSpec, config: dict[str, Any]) -> None:
    """Refuse, naming the field, any config value `spec`'s graph does not implement exactly. A field the
    config lacks takes transformers' default, which every rule allows (tests/test_config_guards.py)."""
    config = family_rope_fields(spec, config)  # gpt_neox
    ropes = [rope_parameters(config, t) for t in rope_layer_types(config) or ["full_attention"]]  # gemma3: each
    for rule in config_rules(spec):
        value = [r.get(rule.field) for r in ropes] if rule.field in ROPE_FIELDS else config.get(rule.field)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and item not in rule.allowed:
                why = f": {rule.why}" if rule.why else ""
                raise UnsupportedModelError(
                    f"{spec.model_type} {rule.field} {item!r} is not supported "
                    f"(supported: {', '.join(map(str, rule.allowed))}){why}")


def _gemma_fields(keys: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    """gemma family: the ModelShape fields read through config_keys "attn_softcap", "final_softcap",
    "query_pre_attn_scalar" (the scores' scale is its -0.5 power, as transformers computes it) and
    "layer_types" (which layers slide, and with gemma3's per-layer-type rope, which rotate with the local base)."""
    out: dict[str, Any] = {}
    for name in ("attn_softcap", "final_softcap"):
        if name in keys and config.get(keys[name]) is not None:
            out[name] = float(config[keys[name]])
    if "query_pre_attn_scalar" in keys and config.get(keys["query_pre_attn_scalar"]) is not None:
        out["attention_scale"] = float(config[keys["query_pre_attn_scalar"]]) ** -0.5
    if "layer_types" in keys and config.get(keys["layer_types"]) is not None:
        out["sliding_layers"] = [int(t == "sliding_attention") for t in config[keys["layer_types"]]]
        # gemma3: the sliding layers rotate with rope_parameters["sliding_attention"] (rope_local_base_freq)
        out["local_rope"] = "sliding_attention" in rope_layer_types(config) and any(out["sliding_layers"])
    return out


def shape_from_config(spec: ArchSpec, config: dict[str, Any], generation: dict[str, Any] | None = None) -> ModelShape:
    """Build the normalized shape from an HF config.json dict (and generation_config.json when present)."""
    keys = {**_DEFAULT_KEYS, **spec.config_keys}
    config = family_rope_fields(spec, config)  # gpt_neox

    def get(name, default=None):
        value = config.get(keys[name], default)
        if value is None and default is None:
            raise UnsupportedModelError(f"config.json lacks '{keys[name]}' needed for {spec.model_type}")
        return value

    hidden = int(get("hidden_size"))
    heads = int(get("num_heads"))
    kv_heads = int(config.get(keys["num_kv_heads"]) or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    intermediate = config.get(keys["intermediate_size"]) or 4 * hidden
    if spec.positions == "rope":
        rope = rope_parameters(config)
        rope_type = rope["rope_type"]
        rotary_dim = int(head_dim * float(rope["partial_rotary_factor"]))
        rope_theta = float(rope["rope_theta"])
        longrope_max = (int(rope.get("original_max_position_embeddings")
                            or config.get("original_max_position_embeddings") or get("context_length"))
                        if rope_type == "longrope" else None)  # phi3 longrope
    else:
        rope_type, rotary_dim, rope_theta = "none", 0, 0.0
        longrope_max = None
    window = config.get(keys["sliding_window"]) if "sliding_window" in keys else None
    # granite / smollm3: scalars and per-layer rotary flags a family reads through config_keys.
    scalars = {name: float(config[keys[name]]) for name in ("embedding_multiplier", "residual_multiplier",
               "attention_scale", "logits_scaling") if name in keys and config.get(keys[name]) is not None}
    rope_layers = config.get(keys["rope_layers"]) if "rope_layers" in keys else None
    gemma = _gemma_fields(keys, config)  # gemma family
    if rope_layers is None and "rope_layer_interval" in keys:  # transformers' SmolLM3Config default
        interval = int(config.get(keys["rope_layer_interval"]) or 4)
        rope_layers = [int((i + 1) % interval != 0) for i in range(int(get("num_layers")))]
    gen = generation or {}
    eos = _ids(gen.get("eos_token_id", config.get("eos_token_id")))
    bos = gen.get("bos_token_id", config.get("bos_token_id"))
    pad = gen.get("pad_token_id", config.get("pad_token_id"))
    return ModelShape(
        model_type=spec.model_type,
        num_layers=int(get("num_layers")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        intermediate_size=int(intermediate),
        vocab_size=int(get("vocab_size")),
        context_length=int(get("context_length")),
        norm_eps=float(get("norm_eps")),
        rotary_dim=rotary_dim,
        rope_theta=rope_theta,
        rope_type=rope_type,
        sliding_window=int(window) if window else None,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos,
        pad_token_id=None if pad is None else int(_ids(pad)[0]),
        longrope_original_max=longrope_max,
        rope_layers=None if rope_layers is None else [int(v) for v in rope_layers],  # smollm3
        **scalars,  # granite
        **gemma,
    )
