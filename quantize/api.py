"""`quantize()`: an exported fp32 folder -> a quantized folder the runtime loads like any other,
with the plan and a quality report (KL, top-1, perplexity, size) written into its manifest."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import onnx

import onnx_edge
from onnx_edge.manifest import Manifest, copy_listed_files, read_manifest, write_manifest
from onnx_edge.runtime.integrity import verify_files
from onnx_edge.progress import Steps
from onnx_edge.quantize.calibration import FeedReader, decoder_feeds, texts
from onnx_edge.quantize.config import CPU_DEPENDENT_FORMATS, QuantConfig, QuantizeError
from onnx_edge.quantize.plan import kept_weights, manual_keep, mean_kl, quantizable, search
from onnx_edge.quantize.weight_only import EMBED, LM_HEAD, quantize_linear_layers, quantize_tables, table_block_size
from onnx_edge.staging import claim_output, staged_folder

DATA_FILE = "model.onnx.data"


def quantize(input: str | os.PathLike, output: str | os.PathLike, precision: str = "int4", *, force: bool = False,
             scheme: str | None = None, block_size: int = 32, symmetric: bool = False, accuracy_level: int | None = None,
             algorithm: str = "rtn", calibration: str = "minmax", int8_format: str | None = None, keep: tuple[str, ...] = (),
             embeddings: str | None = None, keep_precision: str | None = None, max_kl: float | None = None,
             text_file: str | None = None, provider: str | None = None, context: int = 256, eval_windows: int = 8,
             calib_windows: int = 4, report: bool = True, progress: bool = False) -> Manifest:
    """Quantize the fp32 folder `input` into `output` (see DESIGN.md, Quantization). `provider`: the target
    (default: the one the input was exported for); cuda and dml variants run on an fp16 base."""
    src = Path(input).expanduser().absolute()
    manifest = read_manifest(src)
    provider = provider or manifest.provider
    cfg = QuantConfig(precision=precision, scheme=scheme, block_size=block_size, symmetric=symmetric,
                      accuracy_level=accuracy_level, algorithm=algorithm, calibration=calibration, int8_format=int8_format, keep=tuple(keep),
                      embeddings=embeddings, keep_precision=keep_precision, max_kl=max_kl, provider=provider)
    _check_target(src, manifest, cfg.provider)
    if manifest.precision != "fp32":
        raise QuantizeError(f"{src}: is already {manifest.precision}; quantize the fp32 export instead")
    verify_files(src, manifest)
    calib_text, eval_text, label = texts(text_file)
    claim = claim_output(output, force, inputs=[src] + ([text_file] if text_file else []))

    steps = Steps(3 + bool(report) + bool(max_kl), enabled=progress, title=f"quantize {precision}")
    try:
        with steps.step("load"):
            model = onnx.load(src / manifest.model_file)
            from onnx_edge.runtime.session import DecoderSession
            from onnx_edge.runtime.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(src, manifest.tokenizer.get("file", "tokenizer.json")).tokenizer
            reader = None
            if cfg.scheme == "static" or cfg.algorithm == "gptq" or max_kl:
                from onnx_edge.evaluate.quality import token_windows

                calib = token_windows(tokenizer, calib_text, min(context, manifest.architecture["context_length"]),
                                      calib_windows)
                reader = FeedReader(decoder_feeds(manifest, calib))
        names = quantizable(model, include_tables=cfg.embeddings == "quantize" and cfg.precision != "fp16")
        keep = manual_keep(names, cfg.keep)
        plan = None
        if max_kl:
            with steps.step("sensitivity"):
                if cfg.scheme != "weight_only":
                    raise QuantizeError("--max-kl works with weight-only schemes")
                plan = _sensitivity(model, manifest, src, cfg, names, keep, reader)
                keep |= kept_weights(plan, [n for n in names if n not in keep])
                cfg.auto_keep = plan.kept
        with steps.step("quantize"):
            qmodel = apply(model, manifest, cfg, names, keep, reader)
            del model
            _check_ops(qmodel, cfg.provider)
        with staged_folder(claim) as tmp:
            with steps.step("save"):
                onnx.save_model(qmodel, tmp / manifest.model_file, save_as_external_data=True,
                                all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
                del qmodel
                copy_listed_files(src, tmp, manifest, skip=(manifest.model_file, DATA_FILE))
            qman = _quantized_manifest(manifest, cfg, names, keep, plan, src)
            write_manifest(tmp, qman)  # records files so the runtime can load it for the report
            qman.quantization["size_mb"]["after"] = round(sum(e.size for e in qman.files.values()) / 1e6, 2)
            if report:
                with steps.step("quality report"):
                    from onnx_edge.evaluate.quality import compare_sessions, token_windows

                    windows = token_windows(tokenizer, eval_text, min(context, manifest.architecture["context_length"]),
                                            eval_windows)
                    ref = DecoderSession(src, manifest, "cpu")
                    cand = DecoderSession(tmp, qman, "cpu")
                    quality = compare_sessions(ref, cand, windows, f"{label} (evaluation half)")
                    from onnx_edge.evaluate.cpu import measured_on

                    qman.quantization["quality"] = dict(quality.to_dict(), measured_on=measured_on())
            write_manifest(tmp, qman)
    finally:
        steps.close()
        claim.release()
    return qman


def apply(model: onnx.ModelProto, manifest: Manifest, cfg: QuantConfig, names: list[str], keep: set[str],
          reader) -> onnx.ModelProto:
    """A quantized copy of `model`: weights in `keep` stay fp32, or go int8 when keep_precision says so."""
    model = copy.deepcopy(model)
    from onnx_edge.quantize.fp16 import to_fp16

    if cfg.precision == "fp16":
        return to_fp16(model, manifest.io.logits)
    if cfg.fp16_base:  # GPU weight-only: quantize the fp32 weights, then everything else goes fp16
        fp32 = dataclasses.replace(cfg, provider="cpu")
        return to_fp16(apply(model, manifest, fp32, names, keep, reader), manifest.io.logits)
    everything = set(names)
    if keep and cfg.keep_precision == "int8":
        int8 = dataclasses.replace(cfg, precision="int8", algorithm="rtn", max_kl=None, keep_precision="fp32")
        model = quantize_linear_layers(model, int8, keep=everything - keep)
        quantize_tables(model, int8, keep=everything - keep)
        keep = set()  # now MatMulNBits: the main pass below no longer sees them as MatMul
    table_keep = keep | (set() if cfg.embeddings == "quantize" else {EMBED, LM_HEAD})
    if cfg.scheme != "weight_only":
        # onnxruntime's int8 quantizer needs every activation's type; infer them while the graph
        # has standard ops only (inference stops at the contrib ops the tables become).
        model = onnx.shape_inference.infer_shapes(model)
    # Tables are weight-only under every scheme: a Gather's input is an index, not an activation.
    quantize_tables(model, dataclasses.replace(cfg, scheme="weight_only", int8_format=None), keep=table_keep)
    if cfg.scheme == "weight_only":
        return quantize_linear_layers(model, cfg, keep, reader)
    from onnx_edge.quantize.int8 import quantize_int8

    return quantize_int8(model, cfg, keep, reader)


def _check_target(src: Path, manifest: Manifest, provider: str) -> None:
    """A fused graph exported with the rotary inside GroupQueryAttention cannot become a DirectML folder."""
    from onnx_edge.targets import TARGETS

    if manifest.graph == "fused" and TARGETS[manifest.provider].rotary_in_attention \
            and not TARGETS[provider].rotary_in_attention:
        raise QuantizeError(f"{src}: was exported for {manifest.provider}; {provider} needs its own graph "
                            f"(rotary outside GroupQueryAttention): export again with --provider {provider}")


def _check_ops(model: onnx.ModelProto, provider: str) -> None:
    from onnx_edge.targets import unsupported_ops

    missing = unsupported_ops({(n.domain, n.op_type) for n in model.graph.node}, provider)
    if missing:
        raise QuantizeError(f"the quantized graph has operators {provider} has no kernel for: {', '.join(missing)}")


def _sensitivity(model, manifest, folder, cfg, names, keep, reader):
    """Measure KL on the calibration windows for single-unit and whole-model plans."""
    from onnx_edge.evaluate.quality import window_logprobs
    from onnx_edge.runtime.session import DecoderSession

    windows = [feed[manifest.io.input_ids][0] for feed in reader.feeds]
    ref = DecoderSession(folder, manifest, "cpu")
    ref_logps = [window_logprobs(ref, w) for w in windows]
    del ref

    def measure(keep_set: set[str]) -> float:
        candidate = apply(model, manifest, dataclasses.replace(cfg, max_kl=None), names, keep_set, reader)
        session = DecoderSession(folder, manifest, "cpu", model_bytes=candidate.SerializeToString())
        return mean_kl(ref_logps, [window_logprobs(session, w) for w in windows])

    return search(names, keep, cfg.max_kl, measure)


def _quantized_manifest(src: Manifest, cfg: QuantConfig, names, keep, plan, src_folder: Path) -> Manifest:
    m = copy.deepcopy(src)
    m.precision = cfg.precision
    m.provider = cfg.provider
    if cfg.fp16_base:
        m.io = dataclasses.replace(m.io, kv_dtype="float16")
    m.validation = None  # PyTorch parity belongs to the fp32 export; the quality report below replaces it
    m.provenance = dict(src.provenance, quantized_from=str(src_folder),
                        quantizer=f"onnx-edge-kit {onnx_edge.__version__}",
                        export_validation=src.validation)
    m.quantization = {
        "config": cfg.to_dict(),
        "weights": {n: (("fp16" if cfg.fp16_base else "fp32") if n in keep and cfg.keep_precision == "fp32" else
                        "int8" if n in keep else cfg.precision) for n in names},
        "kept_patterns": list(cfg.keep),
        "sensitivity": plan.to_dict() if plan else None,
        "calibration_text": "pydoc_data.topics (calibration half)" if cfg.scheme == "static" or plan else None,
        "table_block_size": (table_block_size(src.architecture["hidden_size"], cfg.block_size)
                             if cfg.embeddings == "quantize" and cfg.scheme != "cast" else None),
        "size_mb": {"before": round(sum(e.size for e in src.files.values()) / 1e6, 2)},
        # u8s8 / s8s8 integer GEMMs saturate on AVX2 and non-VNNI AVX-512: quality there differs from the report
        "cpu_dependent": cfg.int8_format in CPU_DEPENDENT_FORMATS,
    }
    return m
