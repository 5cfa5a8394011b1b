"""`export --precision gguf`: export fp32 (validated against PyTorch), then rebuild every importable
weight from the GGUF's own blocks, bitwise equal to gguf's dequantization (quantize/gguf_blocks.py)."""

from __future__ import annotations

import os
import shutil

from onnx_edge.errors import OutputError, SourceError
from onnx_edge.manifest import Manifest


def export_gguf_native(source: str, output: str | os.PathLike, *, force: bool = False, validate: bool = True,
                       progress: bool = False, accuracy_level: int = 0, provider: str = "cpu",
                       **export_kwargs) -> Manifest:
    from onnx_edge.export.exporter import export, provider_target
    from onnx_edge.export.sources import resolve_source
    from onnx_edge.quantize.gguf_blocks import import_gguf_folder
    from onnx_edge.staging import check_output, resolve_output

    if not provider_target(provider).gguf_export:
        raise OutputError("--precision gguf writes CPU graphs (fp32 activations, GatherBlockQuantized); for "
                          f"{provider} export fp32 and quantize with --provider {provider}")
    src = resolve_source(source)
    if src.kind not in ("gguf", "alias"):
        raise SourceError(f"{source}: --precision gguf needs a .gguf source; quantize other sources with "
                          f"'onnx-edge quantize'")
    out = resolve_output(output, inputs=[src.path])
    check_output(out, force)  # fail before the fp32 step; import_gguf_folder claims the output
    fp32 = out.parent / f".{out.name}.fp32-{os.getpid()}"
    try:
        export(source, fp32, force=True, validate=validate, progress=progress, provider=provider, **export_kwargs)
        return import_gguf_folder(fp32, src.path, out, accuracy_level=accuracy_level, force=force)
    finally:
        shutil.rmtree(fp32, ignore_errors=True)
