"""Map an HF state dict onto our canonical weight names, assert-everything style: every tensor
must be consumed and every shape must match, or the export stops."""

from __future__ import annotations

import numpy as np

from onnx_edge.errors import UnsupportedModelError
from onnx_edge.models.spec import ArchSpec, ModelShape


def canonical_weights(spec: ArchSpec, shape: ModelShape, state_dict: dict) -> dict[str, np.ndarray]:
    """Returns float32 arrays: matrices as (in, out) with q/k/v and gate/up packed along `out`;
    embeddings and lm_head as (vocab, hidden). A tied lm_head is left out (the graph reuses the embedding)."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith(spec.ignore_suffixes)}
    used: set[str] = set()

    def take(canon: str, layer: int | None = None, required: bool = True):
        template = spec.weights.get(canon)
        name = None if template is None else template.format(i=layer)
        if name is None or name not in sd:
            if required:
                raise UnsupportedModelError(f"{spec.model_type}: weight '{name or canon}' missing from the checkpoint")
            return None
        used.add(name)
        return sd[name].detach().to("cpu").float().numpy()

    def matrix(canon: str, layer: int, required: bool = True):
        w = take(canon, layer, required)
        if w is None:
            return None
        return w if spec.conv1d else w.T  # Linear stores (out, in)

    h, nh, nkv, d, inter = (shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim,
                            shape.intermediate_size)
    out: dict[str, np.ndarray] = {"embed_tokens.weight": take("embed_tokens.weight")}
    if spec.positions == "learned":
        out["pos_embed.weight"] = take("pos_embed.weight")
    for i in range(shape.num_layers):
        p = f"layers.{i}."
        # gemma2 / gemma3 (block "sandwich"): the sublayer outputs have norms of their own too.
        sandwich = ("attn_post_norm", "mlp_post_norm") if spec.block == "sandwich" else ()
        for norm in ("attn_norm", "mlp_norm") + sandwich:
            out[p + f"{norm}.weight"] = take(f"layers.{{i}}.{norm}.weight", i)
            bias = take(f"layers.{{i}}.{norm}.bias", i, required=False)
            if bias is not None:
                out[p + f"{norm}.bias"] = bias
        if spec.qk_norm != "none":
            for norm in ("q_norm", "k_norm"):
                out[p + f"{norm}.weight"] = take(f"layers.{{i}}.{norm}.weight", i)
        _packed(out, p + "qkv", ["q", "k", "v"], [nh * d, nkv * d, nkv * d], i, matrix, take)
        if spec.qkv_layout == "per_head":  # gpt_neox: [q_h, k_h, v_h] per head -> [q | k | v]
            _per_head_to_packed(out, p + "qkv", nh, d)
        _packed(out, p + "o", ["o"], [h], i, matrix, take)
        if spec.mlp == "gated":
            _packed(out, p + "gate_up", ["gate", "up"], [inter, inter], i, matrix, take)
        else:
            _packed(out, p + "up", ["up"], [inter], i, matrix, take)
        _packed(out, p + "down", ["down"], [h], i, matrix, take)
    out["final_norm.weight"] = take("final_norm.weight")
    bias = take("final_norm.bias", required=False)
    if bias is not None:
        out["final_norm.bias"] = bias

    head = take("lm_head.weight", required=False)
    if head is not None and not (shape.tie_word_embeddings and np.array_equal(head, out["embed_tokens.weight"])):
        out["lm_head.weight"] = head
    if spec.norm_scale == "one_plus_weight":
        # gemma family: the norm scales by (1 + w), computed in fp32 as transformers does; both graphs then
        # multiply by the stored weight as for any RMSNorm.
        for name in [n for n in out if n.endswith("norm.weight")]:
            out[name] = np.float32(1.0) + out[name]

    leftover = sorted(set(sd) - used)
    if leftover:
        raise UnsupportedModelError(
            f"{spec.model_type}: {len(leftover)} checkpoint tensors have no place in the graph "
            f"(first: {', '.join(leftover[:3])}); this variant of the architecture is not supported"
        )
    _check_shapes(out, shape, spec)
    return out


def _per_head_to_packed(out: dict, name: str, nh: int, d: int) -> None:
    """gpt_neox's query_key_value output channels, (heads, 3, head_dim) as transformers views them before its
    chunk into q, k, v, reordered to (3, heads, head_dim): the [q | k | v] both graphs split."""
    w = out[name + ".weight"]  # (in, nh * 3 * d)
    out[name + ".weight"] = np.ascontiguousarray(
        w.reshape(w.shape[0], nh, 3, d).transpose(0, 2, 1, 3).reshape(w.shape[0], 3 * nh * d))
    if name + ".bias" in out:
        out[name + ".bias"] = np.ascontiguousarray(out[name + ".bias"].reshape(nh, 3, d).transpose(1, 0, 2).reshape(-1))


def check_file_tensors(spec: ArchSpec, num_layers: int, names: list[str], gguf_architecture: str | None = None) -> None:
    """Refuse a checkpoint whose files hold tensors the weight map places nowhere, before any weight loads:
    transformers drops unexpected names on load (a Qwen3 relabelled llama loses its q/k norms), so the loaded
    state dict cannot show them. `gguf_architecture`: `names` are a GGUF's, mapped as transformers maps them."""
    expected = {t.format(i=i) for t in spec.weights.values() for i in range(num_layers)}
    # A base model's checkpoint lacks the "model." / "transformer." prefix, which transformers adds on load.
    prefix = spec.weights["embed_tokens.weight"].split(".")[0] + "."
    expected |= {n.removeprefix(prefix) for n in expected}
    if gguf_architecture is not None:
        expected = _gguf_names(expected, gguf_architecture, num_layers)
    names = [spec.checkpoint_aliases.get(n, n) for n in names]  # gpt_neox: embed_out -> lm_head, as on load
    extra = sorted(n for n in names if n not in expected and not n.endswith(spec.ignore_suffixes))
    if extra:
        raise UnsupportedModelError(
            f"{spec.model_type}: {len(extra)} tensors in the checkpoint file have no place in the graph "
            f"(first: {', '.join(extra[:3])}); transformers would drop them, so this variant is not supported")


def _gguf_names(hf_names: set[str], architecture: str, num_layers: int) -> set[str]:
    """The GGUF names of `hf_names`, by gguf's tensor name map (what transformers' GGUF loader inverts)."""
    import gguf

    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == architecture), None)
    if arch is None:
        raise UnsupportedModelError(f"the gguf library has no tensor names for architecture '{architecture}'")
    name_map = gguf.get_tensor_name_map(arch, num_layers)
    out = set()
    for hf in hf_names:
        base, _, suffix = hf.rpartition(".")
        mapped = name_map.get_name(base)
        if mapped is not None:
            out.add(f"{mapped}.{suffix}")
    return out


def _packed(out, name, parts, widths, layer, matrix, take):
    """Store `name` from the packed HF tensor (e.g. qkv_proj) or by concatenating the parts along `out`."""
    fused = matrix(f"layers.{{i}}.{name.split('.')[-1]}.weight", layer, required=False) if len(parts) > 1 else None
    if fused is not None:
        out[name + ".weight"] = fused
        bias = take(f"layers.{{i}}.{name.split('.')[-1]}.bias", layer, required=False)
    else:
        out[name + ".weight"] = np.concatenate([matrix(f"layers.{{i}}.{p}.weight", layer) for p in parts], axis=1)
        biases = [take(f"layers.{{i}}.{p}.bias", layer, required=False) for p in parts]
        bias = None
        if any(b is not None for b in biases):
            bias = np.concatenate([np.zeros(wd, np.float32) if b is None else b for b, wd in zip(biases, widths)])
    if bias is not None:
        out[name + ".bias"] = bias


def _check_shapes(w: dict[str, np.ndarray], shape: ModelShape, spec: ArchSpec) -> None:
    h, nh, nkv, d, inter, vocab = (shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim,
                                   shape.intermediate_size, shape.vocab_size)
    expected = {"embed_tokens.weight": (vocab, h), "final_norm.weight": (h,), "lm_head.weight": (vocab, h)}
    for i in range(shape.num_layers):
        p = f"layers.{i}."
        expected.update({
            p + "attn_post_norm.weight": (h,), p + "mlp_post_norm.weight": (h,),  # gemma2 / gemma3
            p + "attn_norm.weight": (h,), p + "mlp_norm.weight": (h,), p + "q_norm.weight": (d,), p + "k_norm.weight": (d,),
            p + "qkv.weight": (h, (nh + 2 * nkv) * d), p + "o.weight": (nh * d, h),
            p + "down.weight": (inter, h),
            p + ("gate_up.weight" if spec.mlp == "gated" else "up.weight"):
                (h, 2 * inter if spec.mlp == "gated" else inter),
        })
        if spec.qk_norm == "full_width":  # olmo2: one weight over every head's channels
            expected.update({p + "q_norm.weight": (nh * d,), p + "k_norm.weight": (nkv * d,)})
    for name, want in expected.items():
        if name in w and tuple(w[name].shape) != want:
            raise UnsupportedModelError(
                f"{spec.model_type}: weight {name} has shape {tuple(w[name].shape)}, expected {want} from config.json"
            )
