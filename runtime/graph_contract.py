"""The manifest's runtime contract against model.onnx: io names, dtypes, KV shapes and position tables that
the graph really has, checked before a session is fed."""

from __future__ import annotations

from onnx_edge.runtime.onnx_proto import GraphInterface

KV_MODES = ("concat", "shared_buffer")
KV_LAYOUT = "batch,kv_heads,seq,head_dim"
FLOAT_TYPES = {"float32": 1, "float16": 10}  # manifest dtype name -> TensorProto.DataType
INT64 = 7
LEARNED_POSITIONS = "model.pos_embed.weight"  # the exporters' name for a learned position table (gpt2)


def check_contract(manifest, iface: GraphInterface) -> None:
    """ManifestError unless the manifest's io names, dtypes and shape agree with model.onnx, so the session
    is never fed names, types or sizes the graph does not have (onnxruntime would fail mid-generation with
    an error that is not ours). Reads the manifest only as the runtime will use it."""
    from onnx_edge.errors import ManifestError

    io, arch = manifest.io, manifest.architecture

    def bad(message: str):
        raise ManifestError(f"manifest disagrees with {manifest.model_file}: {message}")

    for name in ("input_ids", "attention_mask", "past_key", "past_value", "logits", "present_key", "present_value",
                 "kv_layout", "kv_dtype", "logits_dtype", "kv_mode"):
        if not isinstance(getattr(io, name), str) or not getattr(io, name):
            raise ManifestError(f"malformed manifest: io.{name} must be a non-empty string")
    for name in ("position_ids", "logits_to_keep"):
        if getattr(io, name) is not None and (not isinstance(getattr(io, name), str) or not getattr(io, name)):
            raise ManifestError(f"malformed manifest: io.{name} must be a non-empty string or null")
    if io.kv_mode not in KV_MODES:
        raise ManifestError(f"malformed manifest: io.kv_mode {io.kv_mode!r} is not one of {', '.join(KV_MODES)}")
    if io.kv_mode == "shared_buffer" and io.logits_to_keep is None:
        raise ManifestError("malformed manifest: io.kv_mode 'shared_buffer' needs io.logits_to_keep")
    if io.kv_layout != KV_LAYOUT:
        raise ManifestError(f"malformed manifest: io.kv_layout {io.kv_layout!r} (this runtime reads {KV_LAYOUT!r})")
    for name in ("kv_dtype", "logits_dtype"):
        if getattr(io, name) not in FLOAT_TYPES:
            raise ManifestError(f"malformed manifest: io.{name} {getattr(io, name)!r} is not one of "
                                f"{', '.join(FLOAT_TYPES)}")
    for name in ("bos_token_id", "pad_token_id"):
        value = arch.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < arch["vocab_size"]):
            raise ManifestError(f"malformed manifest: architecture.{name} must be null or an id below "
                                f"vocab_size {arch['vocab_size']}, got {value!r}")

    # Two KV inputs per layer: a claimed layer count the graph cannot have is refused before any loop over it.
    if 2 * arch["num_layers"] > len(iface.inputs):
        bad(f"architecture.num_layers is {arch['num_layers']} but the graph has {len(iface.inputs)} inputs")
    layers = []
    for i in range(arch["num_layers"]):
        names = []
        for template in (io.past_key, io.past_value, io.present_key, io.present_value):
            try:
                names.append(template.format(i=i))
            except (KeyError, IndexError, ValueError, AttributeError):
                raise ManifestError(f"malformed manifest: io name template {template!r} may only use {{i}}") from None
        layers.append(names)
    fed = {io.input_ids: INT64, io.attention_mask: INT64}
    if io.position_ids is not None:
        fed[io.position_ids] = INT64
    if io.logits_to_keep is not None:
        fed[io.logits_to_keep] = INT64
    kv = FLOAT_TYPES[io.kv_dtype]
    for past_k, past_v, _, _ in layers:
        fed[past_k] = fed[past_v] = kv
    fetched = {io.logits: FLOAT_TYPES[io.logits_dtype]}
    for _, _, present_k, present_v in layers:
        fetched[present_k] = fetched[present_v] = kv
    if len(fed) != 2 + (io.position_ids is not None) + (io.logits_to_keep is not None) + 2 * len(layers):
        bad("two io names collide (a name template without {i}?)")
    for name, elem in fed.items():
        if name not in iface.inputs:
            bad(f"input {name!r} is not an input of the graph")
        if iface.inputs[name][0] != elem:
            bad(f"input {name!r} has element type {iface.inputs[name][0]}, the manifest implies {elem}")
    unfed = [n for n in iface.inputs if n not in fed and n not in iface.initializers]
    if unfed:
        bad(f"graph input(s) {unfed} would never be fed")
    for name, elem in fetched.items():
        if name not in iface.outputs:
            bad(f"output {name!r} is not an output of the graph")
        if iface.outputs[name][0] != elem:
            bad(f"output {name!r} has element type {iface.outputs[name][0]}, the manifest implies {elem}")
    expect = {1: ("num_kv_heads", arch["num_kv_heads"]), 3: ("head_dim", arch["head_dim"])}
    kv_names = [(name, iface.inputs if j < 2 else iface.outputs) for names in layers for j, name in enumerate(names)]
    for name, where in kv_names:
        dims = where[name][1]
        if dims and len(dims) != 4:
            bad(f"{name!r} has {len(dims)} dimensions, the KV layout needs 4")
        for axis, (field_name, value) in expect.items():
            if dims and isinstance(dims[axis], int) and dims[axis] != value:
                bad(f"{name!r} has {dims[axis]} on axis {axis}, architecture.{field_name} is {value}")
    # Position tables (rotary cos/sin caches, learned position embeddings) need a row per position the
    # manifest's context window allows: generating past them fails inside onnxruntime.
    tables = set()
    for op, inputs in iface.nodes:
        if op == "RotaryEmbedding" and len(inputs) >= 4:
            tables.update(inputs[2:4])
        elif op == "GroupQueryAttention" and len(inputs) >= 9:
            tables.update(inputs[7:9])
        elif op == "Gather" and len(inputs) == 2 and (
                inputs[0] == LEARNED_POSITIONS or (io.position_ids is not None and inputs[1] == io.position_ids)):
            tables.add(inputs[0])  # the fused graph gathers realigned positions, not position_ids itself
    for name in sorted(tables):
        dims = iface.initializers.get(name)
        if dims and dims[0] < arch["context_length"]:
            bad(f"position table {name!r} has {dims[0]} rows, architecture.context_length is {arch['context_length']}")
    logits_dims = iface.outputs[io.logits][1]
    if logits_dims and isinstance(logits_dims[-1], int) and logits_dims[-1] != arch["vocab_size"]:
        bad(f"logits have {logits_dims[-1]} entries per position, architecture.vocab_size is {arch['vocab_size']}")
