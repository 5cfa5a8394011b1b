"""The decoder's onnxruntime session: feeds input ids, mask, positions and the KV cache, returns
logits and the new cache. Names and the KV mode come from the manifest, never from guesses.

Two ways to run it:
- `forward(ids, mask, positions, past)` — functional, every graph variant: past in, (logits of every
  position, new cache) out. Validation and tests use it.
- `step(ids, mask, positions, cache)` — the decode loop's path: a `KVCache` that lives across steps. For a
  "shared_buffer" graph (the fused emitter) the cache is preallocated once to the needed length and bound
  as both past and present with IO binding, so the graph writes each step's keys/values in place and
  nothing KV-sized is allocated or copied per token; the logits of the last position land in a reused
  buffer. For a "concat" graph (the reference emitter) it falls back to session.run and growing arrays.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnx_edge.errors import GenerationError
from onnx_edge.manifest import Manifest
from onnx_edge.models.spec import ModelShape
from onnx_edge.runtime.memory import anonymous_regions, grown_ranges, collapse_to_huge_pages, released_mapped_pages
from onnx_edge.runtime.providers import import_ort
from onnx_edge.targets import TARGETS

KV = list[tuple[np.ndarray, np.ndarray]]  # per layer (key, value), each (B, kv_heads, T, head_dim)


def physical_cores() -> int:
    """Physical cores this process may run on (hyperthread siblings counted once). onnxruntime's intra-op
    pool is fastest with one thread per physical core: a second thread on a sibling competes for the same
    FMA units and cache, and more threads than cores make every barrier wait for a descheduled thread."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    try:
        for cpu in allowed:
            base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            with open(f"{base}/core_id") as fh_core, open(f"{base}/physical_package_id") as fh_pkg:
                cores.add((fh_pkg.read().strip(), fh_core.read().strip()))
    except OSError:
        return max(1, len(allowed))
    return max(1, len(cores))


MAX_THREADS = 256  # far above any desktop's cores; a typo like 10**6 would otherwise try to start that many


def check_threads(threads) -> int | None:
    """`threads` as given by a caller or --threads: None (one per core) or a whole number 1..MAX_THREADS."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise GenerationError(f"--threads must be a whole number from 1 to {MAX_THREADS}, got {threads!r}")
    return threads


def session_options(ort, threads: int | None, mem_pattern: bool = True):
    """Chosen deliberately (DESIGN.md "Session options" has the measurements):
    - ORT_ENABLE_ALL: the reference graph needs the level-2 fusions (RMSNorm, Gelu, MatMul+Add); for the fused
      graph they are almost all no-ops, and load time is the same at every level (reading and prepacking
      the weights dominates), which is also why no optimized-model cache is kept on disk.
    - intra-op threads = physical cores unless the caller says otherwise; inter-op parallelism off
      (ORT_SEQUENTIAL): a decoder is a chain, there is nothing to run side by side.
    - memory arena and memory patterns stay on (defaults): the prefill reuses the same-shaped scratch;
      `mem_pattern=False` for DirectML, which requires memory patterns off and sequential execution.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else physical_cores()
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = bool(mem_pattern)
    opts.log_severity_level = 3  # warnings about unused initializers etc. are not the user's concern
    return opts


@dataclass
class KVCache:
    """The KV cache of one batch between decode steps. Rows [0, length) hold real data; `length` is the
    attention mask's length after the last step (left padding included).

    shared_buffer: keys/values are (batch, kv_heads, capacity, head_dim) numpy buffers allocated once and
    wrapped without a copy in OrtValues bound as both past and present.
    concat: keys/values are (batch, kv_heads, length, head_dim), replaced by every step's present outputs.
    `token_ids` (batch 1 only) are the tokens whose keys/values occupy rows [0, length), for prefix reuse."""

    batch: int
    capacity: int
    shared: bool
    keys: list[np.ndarray]
    values: list[np.ndarray]
    length: int = 0
    token_ids: list[int] | None = None
    _binding: object = field(default=None, repr=False)
    _logits: np.ndarray | None = field(default=None, repr=False)
    _logits_value: object = field(default=None, repr=False)
    _keep_one: object = field(default=None, repr=False)
    _keep_all: object = field(default=None, repr=False)

    def as_past(self) -> KV:
        """The cache as forward() takes it: (key, value) per layer with `length` rows."""
        return [(k[:, :, :self.length], v[:, :, :self.length]) for k, v in zip(self.keys, self.values)]


class DecoderSession:
    def __init__(self, folder: Path, manifest: Manifest, provider: str = "cpu", threads: int | None = None,
                 model_bytes: bytes | None = None, device_buffers: bool | None = None):
        """`model_bytes` runs an in-memory graph (weights embedded) under the folder's manifest: quantize's
        sensitivity search tries many graphs without writing each to disk.
        `device_buffers`: keep the KV cache and the logits in onnxruntime-allocated memory on the provider's
        device (default: on for cuda and dml; on the CPU, numpy buffers are shared with onnxruntime instead,
        and True runs the device code path on the CPU, which is how it is tested without a GPU)."""
        ort = import_ort()
        running, folder_target = TARGETS[provider], TARGETS.get(manifest.provider, TARGETS["cpu"])
        self.device = running.device
        self.device_buffers = running.device != "cpu" if device_buffers is None else bool(device_buffers)
        self._ort = ort
        self.manifest = manifest
        self.shape = ModelShape.from_dict(manifest.architecture)
        self.io = manifest.io
        self.threads = check_threads(threads) or physical_cores()
        model = model_bytes if model_bytes is not None else str(folder / manifest.model_file)
        # Huge pages for the weights: measured on the decode loop's path only (first new_cache), so
        # validation, quality and quantization sessions (forward() only) never pay for it.
        self.huge_pages = provider == "cpu" and os.environ.get("ONNX_EDGE_HUGE_PAGES", "1") != "0"
        before = anonymous_regions() if self.huge_pages else None
        self.huge_page_bytes = 0  # what the first new_cache() collapsed
        data_files = [folder / name for name in manifest.files if name != manifest.model_file]
        release = model_bytes is None and os.environ.get("ONNX_EDGE_RELEASE_MAPPED", "1") != "0"
        # A DirectML folder keeps DirectML's options wherever it runs, so its CPU check exercises them too.
        options = session_options(ort, self.threads, running.mem_pattern and folder_target.mem_pattern)
        with released_mapped_pages(data_files if release else []):
            self.session = ort.InferenceSession(model, sess_options=options, providers=[running.ort_name])
        # The ranges to collapse are fixed now: later allocations of the process are none of our business.
        self._huge_ranges = grown_ranges(before) if before is not None else None
        n = self.shape.num_layers
        self.past_names = [(self.io.past_key.format(i=i), self.io.past_value.format(i=i)) for i in range(n)]
        self.present_names = [(self.io.present_key.format(i=i), self.io.present_value.format(i=i)) for i in range(n)]
        self.output_names = [self.io.logits] + [name for pair in self.present_names for name in pair]
        self.kv_dtype = np.dtype(self.io.kv_dtype)
        self.uses_positions = self.io.position_ids is not None
        self.shared_kv = self.io.kv_mode == "shared_buffer"
        self.logits_to_keep = self.io.logits_to_keep  # input name or None
        # Prefix reuse (batch 1): the cache of the last request, with the tokens it holds. Off where the
        # attention kernel cannot run a multi-token chunk on top of a cache (DirectML).
        self.reuse_prefix = running.prefix_reuse
        self.last_reused = 0  # prefix rows the last batch-1 request took from the previous one (diagnostics)
        self._last: KVCache | None = None
        self._lock = threading.Lock()

    # -- functional API -------------------------------------------------------------------------------
    def empty_cache(self, batch: int) -> KV:
        empty = np.zeros((batch, self.shape.num_kv_heads, 0, self.shape.head_dim), dtype=self.kv_dtype)
        return [(empty, empty) for _ in range(self.shape.num_layers)]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: KV) -> tuple[np.ndarray, KV]:
        """input_ids/position_ids (B, S), attention_mask (B, past + S) -> logits (B, S, vocab), new cache."""
        feed = self._feed(input_ids, attention_mask, position_ids)
        for (k_name, v_name), (k, v) in zip(self.past_names, past):
            feed[k_name], feed[v_name] = np.ascontiguousarray(k), np.ascontiguousarray(v)
        outs = self.session.run(self.output_names, feed)
        cache = [(outs[1 + 2 * i], outs[2 + 2 * i]) for i in range(self.shape.num_layers)]
        return outs[0], cache

    def _feed(self, input_ids, attention_mask, position_ids) -> dict:
        feed = {self.io.input_ids: np.ascontiguousarray(input_ids, dtype=np.int64),
                self.io.attention_mask: np.ascontiguousarray(attention_mask, dtype=np.int64)}
        if self.uses_positions:
            feed[self.io.position_ids] = np.ascontiguousarray(position_ids, dtype=np.int64)
        return feed

    # -- stateful decode API ----------------------------------------------------------------------------
    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """A cache for `batch` rows and up to `capacity` positions (prompt + new tokens, left padding included)."""
        if self._huge_ranges is not None:  # once per session, before its first generation
            ranges, self._huge_ranges = self._huge_ranges, None
            self.huge_page_bytes = collapse_to_huge_pages(ranges)
        shape = self.shape
        capacity = max(1, int(capacity))
        if not self.shared_kv:
            empty = np.zeros((batch, shape.num_kv_heads, 0, shape.head_dim), dtype=self.kv_dtype)
            n = shape.num_layers
            return KVCache(batch, capacity, False, [empty] * n, [empty] * n)
        dims = (batch, shape.num_kv_heads, capacity, shape.head_dim)
        if self.device_buffers:
            # On the device, never copied to the host; GQA reads rows [0, seqlens] only, so no zeroing.
            alloc = lambda: self._ort.OrtValue.ortvalue_from_shape_and_type(dims, self.kv_dtype, self.device, 0)
        else:
            # np.zeros maps fresh zero pages lazily: memory is touched only as rows are written.
            alloc = lambda: np.zeros(dims, dtype=self.kv_dtype)
        keys = [alloc() for _ in range(shape.num_layers)]
        values = [alloc() for _ in range(shape.num_layers)]
        cache = KVCache(batch, capacity, True, keys, values)
        self._bind_cache(cache)
        return cache

    def _bind_cache(self, cache: KVCache) -> None:
        ort = self._ort
        binding = self.session.io_binding()
        dims = (cache.batch, 1, self.shape.vocab_size)
        if self.device_buffers:
            cache._logits = None  # each step copies the (B, 1, vocab) logits to the host: 4 * vocab bytes a row
            cache._logits_value = ort.OrtValue.ortvalue_from_shape_and_type(dims, np.float32, self.device, 0)
        else:
            cache._logits = np.zeros(dims, dtype=np.float32)
            cache._logits_value = ort.OrtValue.ortvalue_from_numpy(cache._logits)
        binding.bind_ortvalue_output(self.io.logits, cache._logits_value)  # bound first: output 0 from now on
        wrap = (lambda x: x) if self.device_buffers else ort.OrtValue.ortvalue_from_numpy  # numpy: no copy
        for (pk, pv), (ok, ov), k, v in zip(self.past_names, self.present_names, cache.keys, cache.values):
            k_val, v_val = wrap(k), wrap(v)
            binding.bind_ortvalue_input(pk, k_val)
            binding.bind_ortvalue_output(ok, k_val)
            binding.bind_ortvalue_input(pv, v_val)
            binding.bind_ortvalue_output(ov, v_val)
        cache._binding = binding
        cache._keep_one = ort.OrtValue.ortvalue_from_numpy(np.array(1, dtype=np.int64))
        cache._keep_all = ort.OrtValue.ortvalue_from_numpy(np.array(0, dtype=np.int64))

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, cache: KVCache,
             last_only: bool = True) -> np.ndarray:
        """Run S new tokens against `cache` (rows [0, T - S) filled, T = attention_mask's length), update it in
        place, and return logits: (B, 1, vocab) for the last position when `last_only`, else (B, S, vocab).
        With a shared buffer the returned array is reused by the next step: read it before calling again."""
        total = attention_mask.shape[1]
        s = input_ids.shape[1]
        if total - s != cache.length:
            raise ValueError(f"cache holds {cache.length} positions but the mask implies {total - s}")
        if not cache.shared:
            logits, kv = self.forward(input_ids, attention_mask, position_ids, cache.as_past())
            cache.keys, cache.values = [k for k, _ in kv], [v for _, v in kv]
            cache.length = total
            return logits[:, -1:] if last_only else logits
        if total > cache.capacity:
            raise ValueError(f"{total} positions exceed the KV cache's capacity of {cache.capacity}")
        binding = cache._binding
        ort = self._ort
        for name, array in self._feed(input_ids, attention_mask, position_ids).items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        # Without a logits_to_keep input (a shared-buffer graph from elsewhere) every position comes back.
        in_place = last_only and (self.logits_to_keep is not None or input_ids.shape[1] == 1)
        if self.logits_to_keep is not None:
            binding.bind_ortvalue_input(self.logits_to_keep, cache._keep_one if last_only else cache._keep_all)
        if in_place:
            binding.bind_ortvalue_output(self.io.logits, cache._logits_value)
        else:
            binding.bind_output(self.io.logits, self.device if self.device_buffers else "cpu")
        self.session.run_with_iobinding(binding)
        cache.length = total
        if in_place:
            return cache._logits if cache._logits is not None else cache._logits_value.numpy()
        logits = binding.get_outputs()[0].numpy()
        binding.bind_ortvalue_output(self.io.logits, cache._logits_value)  # back to the reused buffer
        return logits[:, -1:] if last_only else logits

    # -- prefix reuse (batch 1) -------------------------------------------------------------------------
    def cache_for(self, prompt: list[int], capacity: int) -> tuple[KVCache, int]:
        """A batch-1 cache for `prompt` and how many of its first tokens are already in it. When the last
        request's cache holds a prefix of `prompt`, those rows are kept and only the rest needs a prefill
        (at least the last token is always run again: its logits pick the first new token)."""
        with self._lock:
            last, self._last = self._last, None  # a concurrent request gets a fresh cache, never a shared one
        self.last_reused = 0
        if last is None or not self.reuse_prefix or last.token_ids is None:
            return self.new_cache(1, capacity), 0
        reused = 0
        switch = self.shape.longrope_original_max
        if switch is not None and (len(prompt) > switch) != (len(last.token_ids) > switch):
            # longrope (phi3): a cache of more than `switch` rows holds long-factor keys, a shorter one short-factor
            # keys (runtime/generate.py re-prefills at the switch, as transformers' generate), and a fresh run
            # of this prompt would write the other kind: nothing to reuse.
            return self.new_cache(1, capacity), 0
        for a, b in zip(last.token_ids[:len(prompt) - 1], prompt):
            if a != b:
                break
            reused += 1
        if last.shared and last.capacity < capacity and self.device_buffers:
            last, reused = self.new_cache(1, capacity), 0  # a device cache is not grown through the host
        elif last.shared and last.capacity < capacity:
            grown = self.new_cache(1, capacity)
            for dst, src in zip(grown.keys + grown.values, last.keys + last.values):
                dst[:, :, :reused] = src[:, :, :reused]
            last = grown
        elif not last.shared:
            last.keys = [k[:, :, :reused] for k in last.keys]
            last.values = [v[:, :, :reused] for v in last.values]
        # Rows past `reused` are stale; the graph overwrites them and never reads beyond the mask's length.
        last.length = reused
        last.token_ids = list(prompt[:reused])
        self.last_reused = reused
        return last, reused

    def keep(self, cache: KVCache) -> None:
        """Offer a finished batch-1 cache for the next request's prefix reuse."""
        if cache.batch == 1 and cache.token_ids is not None and self.reuse_prefix:
            with self._lock:
                self._last = cache

    def clear_prefix_cache(self) -> None:
        with self._lock:
            self._last = None
