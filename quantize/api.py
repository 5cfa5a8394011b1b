"""`quantize()`: an exported fp32 folder -> a quantized folder the runtime loads like any other,
with the plan and a quality report (KL, top-1, perplexity, size) written into its manifest."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import onnx

import onnx_edge
from onnx_edge.manifest import Manifest, copy_listed_files, read_manifest, record_files, write_manifest
from onnx_edge.runtime.integrity import verify_files
from onnx_edge.progress import Steps
from onnx_edge.quant_record import QuantRecord
from onnx_edge.quantize.calibration import FeedReader, decoder_feeds, texts
from onnx_edge.quantize.config import QuantConfig, QuantizeError
from onnx_edge.quantize.plan import kept_weights, manual_keep, mean_kl, quantizable, search
from onnx_edge.quantize.weight_only import EMBED, LM_HEAD, quantize_linear_layers, quantize_tables, table_block_size
from onnx_edge.staging import claim_output, staged_folder

DATA_FILE = "model.onnx.data"


def quantize(input: str | os.PathLike, output: str | os.PathLike, config: QuantConfig, *, force: bool = False,
             progress: bool = False, threads: int | None = None) -> Manifest:
    """Quantize the fp32 folder `input` into `output` as `config` says (see DESIGN.md, Quantization), e.g.
    `quantize(src, out, QuantConfig(precision="int8"))`. The target defaults to the provider `input` was
    exported for; cuda and dml variants run on an fp16 base. `threads`: onnxruntime threads of the sessions
    that measure sensitivity and quality (default: one per core)."""
    from onnx_edge.runtime.session import check_threads

    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, e.g. QuantConfig(precision='int8'), not {config!r}")
    check_threads(threads)
    src = Path(input).expanduser().absolute()
    manifest = read_manifest(src)
    cfg = config.for_source(manifest)
    _check_target(src, manifest, cfg.provider)
    if manifest.precision != "fp32":
        raise QuantizeError(f"{src}: is already {manifest.precision}; quantize the fp32 export instead")
    verify_files(src, manifest)
    calib_text, eval_text, label = texts(cfg.text_file)
    claim = claim_output(output, force, inputs=[src] + ([cfg.text_file] if cfg.text_file else []))
    context = min(cfg.context, manifest.architecture["context_length"])

    steps = Steps(3 + cfg.report + bool(cfg.max_kl), enabled=progress, title=f"quantize {cfg.precision}")
    try:
        with steps.step("load"):
            model = onnx.load(src / manifest.model_file)
            from onnx_edge.evaluate.quality import token_windows
            from onnx_edge.runtime.session import DecoderSession
            from onnx_edge.runtime.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(src, manifest.tokenizer.get("file", "tokenizer.json")).tokenizer
            reader = None
            if cfg.scheme == "static" or cfg.algorithm == "gptq" or cfg.max_kl:
                reader = FeedReader(decoder_feeds(manifest, token_windows(tokenizer, calib_text, context,
                                                                          cfg.calib_windows)))
        names = quantizable(model, include_tables=cfg.embeddings == "quantize" and cfg.precision != "fp16")
        keep = manual_keep(names, cfg.keep)
        plan = None
        if cfg.max_kl:
            with steps.step("sensitivity"):
                plan = _sensitivity(model, manifest, src, cfg, names, keep, reader, threads)
                keep |= kept_weights(plan, [n for n in names if n not in keep])
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
            qman = _quantized_manifest(manifest, cfg, src)
            qman.files = record_files(tmp)  # the runtime checks the folder against them for the report
            quality = None
            if cfg.report:
                with steps.step("quality report"):
                    from onnx_edge.evaluate.cpu import measured_on
                    from onnx_edge.evaluate.quality import compare_sessions

                    windows = token_windows(tokenizer, eval_text, context, cfg.eval_windows)
                    ref = DecoderSession(src, manifest, "cpu", threads=threads)
                    cand = DecoderSession(tmp, qman, "cpu", threads=threads)
                    report = compare_sessions(ref, cand, windows, f"{label} (evaluation half)")
                    quality = dict(report.to_dict(), measured_on=measured_on())
            qman.quantization = _record(manifest, qman, cfg, names, keep, plan, label, quality).to_dict()
            write_manifest(tmp, qman)
    finally:
        steps.close()
        claim.release()
    return qman


def apply(model: onnx.ModelProto, manifest: Manifest, cfg: QuantConfig, names: list[str], keep: set[str],
          reader) -> onnx.ModelProto:
    """A quantized copy of `model`: weights in `keep` stay fp32, or go int8 when keep_precision says so."""
    from onnx_edge.quantize.fp16 import to_fp16

    model = copy.deepcopy(model)
    if cfg.precision == "fp16":
        return to_fp16(model, manifest.io.logits)
    model = _quantize_weights(model, cfg, names, keep, reader)
    # GPU weight-only: the fp32 weights are quantized, then everything else goes fp16
    return to_fp16(model, manifest.io.logits) if cfg.fp16_base else model


def _quantize_weights(model: onnx.ModelProto, cfg: QuantConfig, names: list[str], keep: set[str],
                      reader) -> onnx.ModelProto:
    everything = set(names)
    if keep and cfg.keep_precision == "int8":
        int8 = dataclasses.replace(cfg.blocks, bits=8, algorithm="rtn")
        model = quantize_linear_layers(model, int8, keep=everything - keep)
        quantize_tables(model, int8, keep=everything - keep)
        keep = set()  # now MatMulNBits: the main pass below no longer sees them as MatMul
    table_keep = keep | (set() if cfg.embeddings == "quantize" else {EMBED, LM_HEAD})
    if cfg.scheme != "weight_only":
        # onnxruntime's int8 quantizer needs every activation's type; infer them while the graph
        # has standard ops only (inference stops at the contrib ops the tables become).
        model = onnx.shape_inference.infer_shapes(model)
    # Tables are weight-only under every scheme: a Gather's input is an index, not an activation.
    quantize_tables(model, cfg.blocks, keep=table_keep)
    if cfg.scheme == "weight_only":
        return quantize_linear_layers(model, cfg.blocks, keep, reader)
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


def _sensitivity(model, manifest, folder, cfg, names, keep, reader, threads: int | None):
    """Measure KL on the calibration windows for single-unit and whole-model plans."""
    from onnx_edge.evaluate.quality import window_logprobs
    from onnx_edge.runtime.session import DecoderSession

    windows = [feed[manifest.io.input_ids][0] for feed in reader.feeds]
    ref = DecoderSession(folder, manifest, "cpu", threads=threads)
    ref_logps = [window_logprobs(ref, w) for w in windows]
    del ref

    def measure(keep_set: set[str]) -> float:
        candidate = apply(model, manifest, cfg, names, keep_set, reader)
        session = DecoderSession(folder, manifest, "cpu", model_bytes=candidate.SerializeToString(), threads=threads)
        return mean_kl(ref_logps, [window_logprobs(session, w) for w in windows])

    return search(names, keep, cfg.max_kl, measure)


def _quantized_manifest(src: Manifest, cfg: QuantConfig, src_folder: Path) -> Manifest:
    m = copy.deepcopy(src)
    m.precision = cfg.precision
    m.provider = cfg.provider
    if cfg.fp16_base:
        m.io = dataclasses.replace(m.io, kv_dtype="float16")
    m.validation = None  # PyTorch parity belongs to the fp32 export; the quality report replaces it
    m.provenance = dict(src.provenance, quantized_from=str(src_folder),
                        quantizer=f"onnx-edge-kit {onnx_edge.__version__}",
                        export_validation=src.validation)
    return m


def _record(src: Manifest, qman: Manifest, cfg: QuantConfig, names, keep, plan, text_label: str,
            quality: dict | None) -> QuantRecord:
    kept = ("fp16" if cfg.fp16_base else "fp32") if cfg.keep_precision == "fp32" else "int8"
    return QuantRecord(
        config=dict(cfg.to_dict(), auto_keep=plan.kept if plan else []),
        weights={n: kept if n in keep else cfg.precision for n in names},
        kept_patterns=cfg.keep,
        sensitivity=plan.to_dict() if plan else None,
        calibration_text=f"{text_label} (calibration half)" if cfg.scheme == "static" or plan else None,
        table_block_size=(table_block_size(src.architecture["hidden_size"], cfg.block_size)
                          if cfg.embeddings == "quantize" and cfg.scheme != "cast" else None),
        size_mb={"before": _size_mb(src), "after": _size_mb(qman)},
        cpu_dependent=cfg.cpu_dependent,
        quality=quality)


def _size_mb(m: Manifest) -> float:
    return round(sum(e.size for e in m.files.values()) / 1e6, 2)
