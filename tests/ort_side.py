"""Run inside the side environment with an older onnxruntime (tests/test_targets.py, test_real_model.py): load a
folder through the runtime on the CPU provider and print what the tests compare, as one JSON object on stdout.
Arguments: FOLDER PROMPT [chat|plain] [NEW_TOKENS]."""

import json
import sys

import numpy as np
import onnxruntime

from onnx_edge.runtime.model import load

folder, prompt = sys.argv[1], sys.argv[2]
model = load(folder, provider="cpu")
ids = model.encode(prompt, chat=False)
sess = model.session
opts = sess.session.get_session_options()
tokens = np.array([ids], dtype=np.int64)
mask = np.ones_like(tokens)
logits, _ = sess.forward(tokens, mask, np.arange(len(ids))[None], sess.empty_cache(1))
chat = len(sys.argv) > 3 and sys.argv[3] == "chat"
greedy = model.generate(prompt, max_new_tokens=int(sys.argv[4]) if len(sys.argv) > 4 else 8, chat=chat)
print(json.dumps({
    "onnxruntime": onnxruntime.__version__,
    "mem_pattern": opts.enable_mem_pattern,
    "sequential": opts.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL,
    "logits": logits[0].astype(np.float64).tolist(),
    "greedy": greedy.token_ids,
    "text": greedy.text,
}))
