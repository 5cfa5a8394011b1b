"""Lossless GGUF import: build MatMulNBits / GatherBlockQuantized weights straight from a GGUF file's
quantized blocks instead of re-quantizing its dequantized weights (a double quantization).

The ONNX dequantization of every imported weight equals `gguf.quants.dequantize` bit for bit
(+0/-0 aside) under accuracy_level 0 or 1 on the onnxruntime CPU kernels (tests/test_gguf_blocks.py
probes each case with A = identity). How each GGUF type is written:

  Q4_0  w = d·(q - 8)      one 4-bit MatMulNBits, scale d, zero point 8 (the op's default).
  Q8_0  w = d·x, x int8    codes x + 128, zero point 128. The CPU kernel's 8-bit path is ~20x slower
                           than fp32 at accuracy_level 0/1, so there the codes v = x are split into
                           two 4-bit halves v = 16·hi + lo: MatMulNBits(hi + 8, 16d) + MatMulNBits(lo, d,
                           zero point 0). Both products are exact and so is their sum (|v| ≤ 128, d has
                           11 significant bits). accuracy_level 4 uses the native 8-bit kernel.
  Q4_1  w = d·q + m        MatMulNBits(q, d, zero point 0) + BlockSum(x) @ Mᵀ, M = (N, K/32) block
                           minimums and BlockSum(x) = x @ E (E the (K, K/32) block indicator), so the
                           identity probe yields fl(d·q + m) = gguf's value: d·q is exact. A float zero
                           point -m/d is not exact (and hits a slow kernel path).

accuracy_level 4 quantizes the activations to int8 per block: the weights are the same numbers, the
products are not (about 1 ulp on the identity probe; on SmolLM2 the logits move by up to 5, mean KL
0.05 nats vs fp32), so level 0 is the default.

GGUF stores a 2-D weight as N rows of blocks along K, which is MatMulNBits's (N, k_blocks, blob)
layout; rows are output features, so llama.cpp's q/k row permutation is undone by permuting whole rows
(exactly as transformers' GGUF loader does on the dequantized matrix), and q|k|v, gate|up are packed
by concatenating rows. Torch-free: numpy, onnx and gguf only.

Reading the blocks lives in gguf_block_weights.py, the graph rewrite in gguf_block_graph.py.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from pathlib import Path

import onnx

from onnx_edge.quantize.config import QuantizeError
from onnx_edge.quantize.gguf_block_graph import EXACT_ACCURACY_LEVELS, apply_block_weights
from onnx_edge.quantize.gguf_block_weights import read_block_weights



# ---------------------------------------------------------------- a whole folder

def import_gguf_folder(src: str | os.PathLike, gguf_path: str | os.PathLike, output: str | os.PathLike,
                       accuracy_level: int = 0, *, verify: bool = True, force: bool = False):
    """The fp32 folder exported from `gguf_path` -> a folder whose weights are the GGUF's own blocks,
    written atomically. Returns its Manifest: precision 'gguf-<main type>', the plan under quantization."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files
    from onnx_edge.staging import claim_output

    src, gguf_path = Path(src).expanduser(), Path(gguf_path)
    manifest = read_manifest(src)
    if manifest.precision != "fp32":
        raise QuantizeError(f"{src}: is {manifest.precision}; import GGUF blocks into the fp32 export")
    verify_files(src, manifest)
    with claim_output(output, force, inputs=[src, gguf_path]) as claim:
        return _write_block_folder(src, manifest, gguf_path, claim, accuracy_level, verify)


def _write_block_folder(src: Path, manifest, gguf_path: Path, claim, accuracy_level: int, verify: bool):
    import onnx_edge
    from onnx_edge.manifest import copy_listed_files, sha256_file, write_manifest
    from onnx_edge.quant_record import GGUF_BLOCKS, QuantRecord
    from onnx_edge.staging import staged_folder

    blocks = read_block_weights(gguf_path, manifest.architecture)
    model = onnx.load(str(src / manifest.model_file))
    model, plan = apply_block_weights(model, blocks, accuracy_level, verify=verify)
    del blocks
    data_file = "model.onnx.data"
    with staged_folder(claim) as tmp:
        onnx.save_model(model, str(tmp / manifest.model_file), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_file, size_threshold=1024)
        del model
        copy_listed_files(src, tmp, manifest, skip=(manifest.model_file, data_file))
        imported = {k: v for k, v in plan.items() if v["status"] == "imported"}
        main = Counter(v["qtype"] for v in imported.values()).most_common(1)
        m = copy.deepcopy(manifest)
        m.precision = f"gguf-{main[0][0].lower()}" if main else "fp32"
        m.validation = None  # PyTorch parity belongs to the fp32 export
        m.provenance = dict(manifest.provenance, quantized_from=str(src), export_validation=manifest.validation,
                            quantizer=f"onnx-edge-kit {onnx_edge.__version__} (gguf blocks)")
        after = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())  # the manifest is written last
        m.quantization = QuantRecord(
            method=GGUF_BLOCKS, gguf=gguf_path.name, gguf_sha256=sha256_file(gguf_path),
            accuracy_level=accuracy_level, exact=accuracy_level in EXACT_ACCURACY_LEVELS, imported=len(imported),
            weights=plan, size_mb={"before": round(sum(e.size for e in manifest.files.values()) / 1e6, 2),
                                   "after": round(after / 1e6, 2)}).to_dict()
        write_manifest(tmp, m)
    return m
