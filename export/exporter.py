"""`export()`: SOURCE -> validated fp32 ONNX folder with manifest, written atomically."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import onnx

import onnx_edge
from onnx_edge.errors import OutputError, ValidationError
from onnx_edge.manifest import Manifest, write_manifest
from onnx_edge.models import check_config, get_spec, shape_from_config
from onnx_edge.progress import Steps
from onnx_edge.staging import claim_output, staged_folder
from onnx_edge.targets import TARGETS, ProviderTarget
from onnx_edge.versions import installed_versions

SUPPORTED_OPSETS = range(17, 22)
DATA_FILE = "model.onnx.data"
GRAPH_VARIANTS = ("auto", "fused", "reference")


def export(source: str, output: str | os.PathLike, *, force: bool = False, validate: bool = True,
           opset: int = 17, progress: bool = False, graph: str = "auto", provider: str = "cpu",
           threads: int | None = None) -> Manifest:
    """Export SOURCE (HF folder, .gguf, hub id or alias) to an fp32 ONNX folder at `output`.

    `graph`: "fused" (onnxruntime contrib ops: GroupQueryAttention, RotaryEmbedding, fused norms; shared
    KV buffer, last-position logits), "reference" (plain ONNX ops only), or "auto" = fused where the
    family's spec says so (ArchSpec.fused), else reference. See DESIGN.md.
    `provider` (a name in onnx_edge.targets.TARGETS) is the execution provider the folder targets: the graph is
    shaped for it and the manifest records it; quantize then writes that provider's precisions.
    `threads`: onnxruntime threads of the validation session (default: one per core).
    The folder is built next to `output` and renamed into place only when complete and validated."""
    from onnx_edge.export.decoder import build_decoder
    from onnx_edge.export.fused import build_fused_decoder
    from onnx_edge.export.sources import checkpoint_tensor_names, resolve_source, source_sha256
    from onnx_edge.export.torch_model import (gguf_file_type, load_model, read_config, read_model_type, rope_tables,
                                              save_tokenizer_files)
    from onnx_edge.export.weights import canonical_weights, check_file_tensors

    from onnx_edge.runtime.session import check_threads

    tgt = provider_target(provider)
    check_threads(threads)
    if opset not in SUPPORTED_OPSETS or opset > tgt.max_opset:
        raise OutputError(f"opset {opset} is not supported (choose {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1})")
    if graph not in GRAPH_VARIANTS:
        raise OutputError(f"graph {graph!r} is not one of {', '.join(GRAPH_VARIANTS)}")
    src = resolve_source(source)
    model_type = read_model_type(src)
    spec = get_spec(model_type)  # fails fast on an unsupported architecture
    if graph == "fused" and not spec.fused:
        raise OutputError(f"no fused graph for {spec.model_type}; use graph='reference'")
    variant = "fused" if graph != "reference" and spec.fused else "reference"
    # Before any weight loads: every config value the graph does not implement, every tensor it would not place.
    config = read_config(src)
    check_config(spec, config)
    check_file_tensors(spec, shape_from_config(spec, config).num_layers, checkpoint_tensor_names(src),
                       gguf_architecture=model_type if src.kind in ("gguf", "alias") else None)
    claim = claim_output(output, force, inputs=[src.path])

    steps = Steps(6 if validate else 5, enabled=progress, title="export")
    try:
        with steps.step("load model"):
            loaded = load_model(src)
            shape = shape_from_config(spec, loaded.config, loaded.generation)
        with steps.step("map weights"):
            weights = canonical_weights(spec, shape, loaded.model.state_dict())
            rope = (rope_tables(loaded.model, shape.context_length, shape.rotary_dim)
                    if spec.positions == "rope" else None)
            if variant == "fused" and not tgt.rotary_in_attention and shape.sliding_window:
                # DirectML's GQA ignores local_window_size: never let a sequence outgrow the window.
                shape = dataclasses.replace(shape, context_length=min(shape.context_length, int(shape.sliding_window)))
        with steps.step("build graph"):
            if variant == "fused":
                proto, io = build_fused_decoder(spec, shape, weights, rope, opset=opset,
                                                producer_version=onnx_edge.__version__,
                                                rotary_in_attention=tgt.rotary_in_attention)
            else:
                proto, io = build_decoder(spec, shape, weights, rope, opset=opset,
                                          producer_version=onnx_edge.__version__)
            del weights
        with staged_folder(claim) as tmp:
            with steps.step("save"):
                save_model(proto, tmp)
                del proto
                save_tokenizer_files(loaded, tmp)
            manifest = Manifest(
                architecture=shape.to_dict(), io=io, graph=variant, precision="fp32", provider=provider, opset=opset,
                tokenizer={"file": "tokenizer.json", "chat_template": _chat_template_file(tmp)},
                provenance={
                    "source": src.text, "source_kind": src.kind, "source_sha256": source_sha256(src),
                    "exporter": f"onnx-edge-kit {onnx_edge.__version__}",
                    "libraries": installed_versions("torch", "transformers", "onnx", "onnxruntime", "gguf", "tokenizers"),
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                },
            )
            if src.kind in ("gguf", "alias"):
                # fp32 weights read from a quantized GGUF sit on its grid: what `info` and compare tell the user
                manifest.provenance["gguf_file_type"] = gguf_file_type(src.path)
            if validate:
                with steps.step("validate"):
                    manifest.validation = _validate(loaded, tmp, manifest, threads)
            with steps.step("manifest"):
                manifest.provenance["export_seconds"] = dict(steps.times)
                write_manifest(tmp, manifest)
    finally:
        steps.close()
        claim.release()
    return manifest


def provider_target(provider: str) -> ProviderTarget:
    """The target an export names, checked where it enters (export, export_gguf_native)."""
    if provider not in TARGETS:
        raise OutputError(f"provider {provider!r} is not one of {', '.join(TARGETS)}")
    return TARGETS[provider]


def _validate(loaded, folder: Path, manifest: Manifest, threads: int | None) -> dict:
    from onnx_edge.export.validate import validate as run_validation
    from onnx_edge.runtime.session import DecoderSession

    report = run_validation(loaded, DecoderSession(folder, manifest, "cpu", threads=threads))
    if not report.passed:
        raise ValidationError(
            f"validation failed: max |ONNX - PyTorch| = {report.max_abs_diff:.3g} "
            f"(tolerance {report.tolerance:.3g}), greedy match: {report.greedy_match}; no output written"
        )
    return report.to_dict()


def save_model(proto: onnx.ModelProto, folder: Path) -> None:
    """Weights go to one external data file; the graph file stays small and readable."""
    onnx.save_model(proto, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)


def _chat_template_file(folder: Path) -> str | None:
    return "chat_template.jinja" if (folder / "chat_template.jinja").is_file() else None
