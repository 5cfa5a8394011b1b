"""`pipeline("text-generation", model=PATH)`: the Hugging Face pipeline call shape, without torch."""

from __future__ import annotations

from onnx_edge.errors import EdgeError

TASKS = ("text-generation",)


class TextGenerationPipeline:
    def __init__(self, model):
        self.model = model

    def __call__(self, inputs, max_new_tokens: int = 50, return_full_text: bool = True, do_sample: bool = False,
                 temperature: float | None = None, **kwargs):
        """str -> [{"generated_text": ...}]; a list of str -> one such list per prompt; chat messages
        (a list of role/content dicts) -> the conversation with the assistant's reply appended."""
        if do_sample and temperature is None:
            temperature = 1.0
        sampling = dict(kwargs, temperature=temperature if do_sample else 0.0)
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            reply = self.model.generate(messages=inputs, max_new_tokens=max_new_tokens, **sampling)
            return [{"generated_text": list(inputs) + [{"role": "assistant", "content": reply.text}]}]
        if isinstance(inputs, list):
            return [self(p, max_new_tokens=max_new_tokens, return_full_text=return_full_text, do_sample=do_sample,
                         temperature=temperature, **kwargs) for p in inputs]
        # Like transformers' pipeline, a plain string is a continuation prompt, not a chat turn.
        reply = self.model.generate(inputs, chat=False, max_new_tokens=max_new_tokens, **sampling)
        return [{"generated_text": (inputs + reply.text) if return_full_text else reply.text}]


def pipeline(task: str, model, provider: str = "auto", **load_kwargs) -> TextGenerationPipeline:
    from onnx_edge.runtime.model import EdgeModel, load

    if task not in TASKS:
        raise EdgeError(f"unsupported task '{task}' (supported: {', '.join(TASKS)})")
    loaded = model if isinstance(model, EdgeModel) else load(model, provider=provider, **load_kwargs)
    return TextGenerationPipeline(loaded)
