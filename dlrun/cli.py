"""The dlrun command line: a thin typer app; every command is one library call.

Errors a user can fix (DlrunError) end with one line on stderr and exit code 1; `--debug` shows
the traceback. The runner reports through events, which `dlrun.render` draws with rich.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from dlrun import __version__
from dlrun.errors import ConfigError, DlrunError

if TYPE_CHECKING:
    from dlrun.config import ExperimentConfig
    from dlrun.distributed.world import World
    from dlrun.runner.records import RunSummary

T = TypeVar("T")

app = typer.Typer(
    help="dlrun: train deep-learning experiments on dlrun's own engine, eager or static.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class _State:
    debug = False


state = _State()

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML file.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config key, e.g. --set optimizer.lr=0.1 (repeatable).")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="Graph mode: eager or static.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write events as JSON lines to stdout.")]
NprocOpt = Annotated[int | None, typer.Option(
    "--nproc", min=1, help="Run on N processes of this machine (data parallel over MPI); "
    "under mpiexec, dlrun joins the job it was started in.")]
HostsOpt = Annotated[str | None, typer.Option(
    "--hosts", help="Run the --nproc ranks on these hosts, e.g. node1,node2:2 (reached as "
    "MPICH reaches them, ssh by default; every host needs the same paths).")]
HostfileOpt = Annotated[Path | None, typer.Option(
    "--hostfile", help="Like --hosts, from an MPICH hostfile (one host[:slots] a line).")]


def _overrides(set_: list[str] | None, mode: str | None, device: str | None,
               seed: int | None) -> list[str]:
    out = list(set_ or [])
    for key, value in (("mode", mode), ("device", device), ("seed", seed)):
        if value is not None:
            out.append(f"{key}={value}")
    return out


@contextmanager
def error_boundary() -> Iterator[None]:
    """DlrunError -> one line on stderr, exit 1 (the traceback only with --debug)."""
    try:
        yield
    except DlrunError as e:
        if state.debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                          soft_wrap=not err_console.is_terminal)  # a terminal: whole words
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"dlrun {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version.")] = False,
) -> None:
    """Global options."""
    state.debug = debug


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(
        help="Experiment YAML file (not needed with --resume).", show_default=False)] = None,
    set_: SetOpt = None,
    mode: ModeOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue RUN_DIR from its last checkpoint (CONFIG is not re-read).",
        show_default=False)] = None,
    runs_dir: Annotated[Path | None, typer.Option(
        "--runs-dir", help="Where run directories go (default: logging.dir, 'runs').")] = None,
    quiet: QuietOpt = False,
    json_lines: JsonOpt = False,
    nproc: NprocOpt = None,
    hosts: HostsOpt = None,
    hostfile: HostfileOpt = None,
) -> None:
    """Train the model described by CONFIG; logs go to runs/<stamp>-<name>/.

    Example: dlrun train configs/quickstart.yaml --set optimizer.lr=0.003 --mode eager
    """
    from dlrun import render
    from dlrun.runner import train as runner

    overrides = _overrides(set_, mode, device, seed)
    with error_boundary():
        ranks = _join_job(nproc, lambda: _train_config(config, resume, overrides), hosts,
                          hostfile)
        main = ranks is None or ranks.is_main
        view = render.make_view(console, quiet=quiet or not main, json_lines=json_lines)

        def body() -> RunSummary:
            if resume is not None:
                return runner.resume(resume, callbacks=[view], world=ranks)
            cfg, _ = _train_config(config, None, overrides)
            return runner.train(cfg, callbacks=[view], runs_dir=runs_dir, world=ranks)

        summary = _run_as(ranks, body)
        view.close()
    if json_lines or not main:
        return
    render.print_summary(console, summary)
    if summary.status == "interrupted" and ranks is None:
        raise typer.Exit(130)


def _join_job(nproc: int | None, job_config: Callable[[], tuple[ExperimentConfig, str]],
              hosts: str | None = None, hostfile: Path | None = None) -> World | None:
    """This command's place in a job (distributed.launch.join_or_launch): alone (None), one
    worker of it (its World), or, with --nproc N > 1, the launcher of N workers running this
    same command (on --hosts/--hostfile), which exits with their status once they end."""
    from dlrun.distributed.launch import join_or_launch
    from dlrun.runner.parallel import check_batches, job_paths

    def check(n: int) -> list[str]:
        cfg, source = job_config()
        check_batches(cfg, n, source=source)
        return job_paths(cfg, source)

    place = join_or_launch(nproc, sys.argv[1:], check, hosts, hostfile)
    if place.exit_status is not None:
        raise typer.Exit(place.exit_status)
    return place.world


def _run_as(ranks: World | None, body: Callable[[], T]) -> T:
    """body() here, or as one rank of a job: a failure then ends every rank."""
    if ranks is None:
        return body()
    from dlrun.distributed.launch import run_worker

    return run_worker(ranks, body, state.debug)


def _train_config(config: Path | None, resume: Path | None,
                  overrides: list[str]) -> tuple[ExperimentConfig, str]:
    """The config `dlrun train` runs and its file: the run's own with --resume, else CONFIG
    with the overrides."""
    from dlrun.config import load_config

    if resume is not None:
        from dlrun.runner.io.rundir import find_run_config

        source = find_run_config(resume)[1]
        return load_config(source), str(source)
    if config is None:
        raise ConfigError("give a CONFIG file to train (or --resume RUN_DIR)")
    return load_config(config, overrides), str(config)


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file.",
                                        show_default=False)],
    split: Annotated[str | None, typer.Option(
        help="Which split: test, val or train (default: test, else val).")] = None,
    tag: Annotated[str, typer.Option(help="Which checkpoint of a run: best or last.")] = "best",
    data_root: Annotated[Path | None, typer.Option(
        "--data-root", "--data.root", help="Read the dataset from this folder.")] = None,
    set_: SetOpt = None,
    mode: ModeOpt = None,
    device: DeviceOpt = None,
    sample: Annotated[int, typer.Option(
        help="Language models: also generate this many tokens (characters for a character "
        "model).")] = 0,
    prompt: Annotated[str | None, typer.Option(
        help="Start of the generated text (\\n for a newline; default: a newline).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0).")] = 1.0,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", help="Sample from the K most likely characters only.")] = None,
    sample_seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a saved checkpoint on a data split (metrics also go to eval.json beside it).

    Example: dlrun eval runs/<stamp>-quickstart --split val
    """
    from dlrun import render
    from dlrun.runner.commands.evaluate import check_sampling, sample_text
    from dlrun.runner.commands.evaluate import evaluate as run_eval

    overrides = _overrides(set_, mode, device, None)
    if data_root is not None:
        overrides.append(f"data.root={data_root}")
    with error_boundary():
        check_sampling(temperature, top_k, prefix="--")
        text = None if prompt is None else prompt.replace("\\n", "\n")
        gen = sample_text(run, text, sample, temperature, sample_seed,
                          tag=tag, top_k=top_k, overrides=overrides) if sample else None
        result = run_eval(run, split=split, tag=tag, overrides=overrides)
        if gen is not None:
            result["sample"] = gen.pop("text")
            result["generation"] = gen
    if json_out:
        console.print_json(json.dumps(result))
        return
    render.print_eval(console, result)


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="A run directory or a checkpoint file.",
                                        show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="File format: onnx.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where the file goes (default: <run>/export/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version (13 or newer).")] = 17,
    tag: Annotated[str, typer.Option(help="Which checkpoint of a run: best or last.")] = "best",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a trained model (verified against dlrun's own outputs before it is written).

    Example: dlrun export runs/<stamp>-quickstart --out model.onnx
    """
    from dlrun import render
    from dlrun.runner.commands.export_run import export as run_export

    with error_boundary():
        result = run_export(run, fmt=fmt, out=out, opset=opset, tag=tag)
    if json_out:
        console.print_json(json.dumps(result))
        return
    render.print_export(console, result)


@app.command()
def compare(
    config: ConfigArg,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    steps: Annotated[int, typer.Option(help="Training steps compared for agreement.")] = 50,
    timed: Annotated[int, typer.Option(help="Steps timed per mode.")] = 200,
    warmup: Annotated[int, typer.Option(help="Warm-up steps before timing.")] = 10,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write the report as JSON to this file.")] = None,
    runs_dir: Annotated[Path | None, typer.Option(
        "--runs-dir", help="Where the report's run directory goes (default: logging.dir).")] = None,
    nproc: NprocOpt = None,
    hosts: HostsOpt = None,
    hostfile: HostfileOpt = None,
    cuda_graphs: Annotated[bool, typer.Option(
        "--cuda-graphs", help="Also replay the static step as a CUDA graph (needs a GPU): "
        "launches and device time per step beside plain static.")] = False,
) -> None:
    """Run CONFIG in eager and in static mode: same numbers? how much faster and leaner?

    Example: dlrun compare configs/quickstart.yaml --steps 20 --timed 100
    """
    from dlrun import render
    from dlrun.config import load_config
    from dlrun.runner.commands.compare import compare as run_compare
    from dlrun.runner.commands.compare import write_report

    with error_boundary():
        overrides = _overrides(set_, None, device, seed)
        cfg = load_config(config, overrides)
        ranks = _join_job(nproc, lambda: (cfg, str(config)), hosts, hostfile)
        main = ranks is None or ranks.is_main
        view = render.make_view(err_console, quiet=not main)
        report = _run_as(ranks, lambda: run_compare(cfg, steps=steps, warmup=warmup,
                                                    timed=timed, callbacks=[view], world=ranks,
                                                    cuda_graphs=cuda_graphs))
        if not main:
            return
        run_dir = write_report(report, runs_dir if runs_dir is not None else cfg.logging.dir)
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=2))
    render.print_compare(console, report)
    console.print(f"report: {run_dir}/report.md")
    if not report["agree"]:
        err_console.print(f"[bold red]error:[/] eager and static disagree: largest relative loss "
                          f"difference {report['max_rel_loss_diff']:.2e} > "
                          f"{report['tolerance']:.0e}")
        raise typer.Exit(2)


@app.command()
def graph(
    config: ConfigArg,
    set_: SetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="text or dot (Graphviz).")] = "text",
    no_passes: Annotated[bool, typer.Option("--no-passes",
                                            help="Show the graph as traced.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Print every node.")] = False,
    nproc: NprocOpt = None,
    hosts: HostsOpt = None,
    hostfile: HostfileOpt = None,
) -> None:
    """Trace CONFIG's training step and show the graph and what each pass did to it.

    With --nproc N: one rank's step of an N-process job, its gradient all-reduce included.

    Example: dlrun graph configs/quickstart.yaml --no-passes
    """
    from dlrun import render
    from dlrun.config import load_config
    from dlrun.errors import ConfigError
    from dlrun.runner.commands.graph_report import graph_report

    with error_boundary():
        if fmt not in ("text", "dot"):
            raise ConfigError(f"--format: expected text or dot, got {fmt!r}")
        cfg = load_config(config, list(set_ or []))
        ranks = _join_job(nproc, lambda: (cfg, str(config)), hosts, hostfile)
        report = _run_as(ranks, lambda: graph_report(cfg, not no_passes, ranks))
    if ranks is not None and not ranks.is_main:
        return
    if fmt == "dot":
        print(report["dot"])
    else:
        render.print_graph(console, report, full=full)


@app.command()
def info() -> None:
    """Show the engine's primitives, the available devices and how CPU kernels run.

    Example: dlrun info
    """
    from dlrun.backend import cuda_available
    from dlrun.engine.prims import REGISTRY
    from dlrun.engine.static.cpu_kernels import describe

    console.print(f"dlrun {__version__}: {len(REGISTRY)} primitives")
    console.print(f"CUDA available: {cuda_available()}")
    console.print(f"Static CPU plans run fused chains as: {describe()}")


@app.command()
def gradcheck(
    config: ConfigArg,
    set_: SetOpt = None,
    batch: Annotated[int, typer.Option(help="Training samples in the checked batch.")] = 4,
    eps: Annotated[float, typer.Option(help="Finite-difference step.")] = 1e-6,
    max_per_param: Annotated[int, typer.Option(
        help="Entries checked per parameter (seeded random choice).")] = 20,
) -> None:
    """Check every parameter's gradient (float64, eager and static) against finite differences.

    Example: dlrun gradcheck configs/quickstart.yaml --batch 4
    """
    from dlrun import render
    from dlrun.config import load_config
    from dlrun.runner.commands.gradcheck import gradcheck as run_gradcheck

    with error_boundary():
        cfg = load_config(config, list(set_ or []))
        report = run_gradcheck(cfg, batch=batch, eps=eps, max_per_param=max_per_param)
    render.print_gradcheck(console, report)
    if not report["passed"]:
        err_console.print(f"[bold red]error:[/] {report['message']}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    config: ConfigArg,
    set_: SetOpt = None,
    trials: Annotated[int | None, typer.Option(
        help="Finished trials to reach (default: sweep.trials).")] = None,
    workers: Annotated[int, typer.Option(
        help="Trials run at once, as separate processes on this machine.")] = 1,
    storage: Annotated[str | None, typer.Option(
        help="Shared study database, e.g. postgresql://user:pw@host/db (several machines).")
    ] = None,
    runs_dir: Annotated[Path | None, typer.Option(
        "--runs-dir", help="Where the sweep folder goes (default: logging.dir).")] = None,
    name: Annotated[str | None, typer.Option(
        help="The sweep's name (default: the config's name).")] = None,
    new: Annotated[bool, typer.Option(
        "--new", help="Start a fresh sweep even if an unfinished one of this name exists.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Search CONFIG's `sweep:` parameters with Optuna; rerun the same command to continue.

    The sweep goes to runs/<stamp>-<name>-sweep/; each trial is a run directory in it.

    Example: dlrun sweep configs/sweep_mnist_mlp.yaml --trials 20 --workers 2
    """
    from dlrun import render
    from dlrun.config import load_config
    from dlrun.runner.sweep.driver import sweep as run_sweep

    with error_boundary():
        cfg = load_config(config, list(set_ or []))
        view = render.SweepView(console, quiet=quiet)
        try:
            summary = run_sweep(cfg, str(config), callbacks=[view], trials=trials,
                                workers=workers, storage=storage, runs_dir=runs_dir, name=name,
                                new=new)
        finally:
            view.close()
    render.print_sweep_summary(console, summary)


runs_app = typer.Typer(add_completion=False)  # its help: runs_list's docstring
app.add_typer(runs_app, name="runs")
RunsDirOpt = Annotated[Path | None, typer.Option(
    "--dir", help="The folder holding the run directories (default: runs).", show_default=False)]
WideOpt = Annotated[bool, typer.Option(
    "--wide", help="Show every column, however wide the terminal.")]


@runs_app.callback(invoke_without_command=True)
def runs_list(
    ctx: typer.Context,
    runs_dir: RunsDirOpt = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Only runs whose name matches this glob, e.g. 'mnist*'.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only runs ended so: completed, failed, interrupted, ...")] = None,
    sort: Annotated[str | None, typer.Option(
        "--sort", help="Best first by this final metric, e.g. val_accuracy.")] = None,
    last: Annotated[int | None, typer.Option(
        "--last", help="Only the N newest runs (of those matched).")] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="The metric column shows this final metric (default: the headline "
        "one, or --sort's).")] = None,
    wide: WideOpt = False,
) -> None:
    """List past runs (newest first), filtered and sorted; `show` one, `diff` several.

    The table: run, status, steps, one metric; date, mode, best metric when there is room.

    Example: dlrun runs --status completed --sort val_accuracy --last 10
    """
    ctx.obj = runs_dir
    if ctx.invoked_subcommand is not None:
        return
    from dlrun import render
    from dlrun.runner.commands.runs import list_runs_table

    root = runs_dir or Path("runs")
    with error_boundary():
        rows = list_runs_table(root, name=name, status=status, last=last, sort=sort)
    render.print_runs(console, rows, root, metric=metric or sort, wide=wide)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(
        help="A run folder, or (a unique part of) its name under --dir.", show_default=False)],
    runs_dir: RunsDirOpt = None,
    wide: WideOpt = False,
) -> None:
    """One run: summary, config, the last metrics, checkpoints and plots.

    Example: dlrun runs show mnist-mlp
    """
    from dlrun import render
    from dlrun.runner.commands.runs import show_run

    with error_boundary():
        info = show_run(run, runs_dir or ctx.obj or Path("runs"))
    render.print_run(console, info, wide=wide)


@runs_app.command("diff")
def runs_diff(
    ctx: typer.Context,
    runs: Annotated[list[str], typer.Argument(
        help="Two runs or more (folders or names under --dir), or one sweep folder.",
        show_default=False)],
    runs_dir: RunsDirOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where the PNG of the curves goes (default: diff-<stamp>.png beside the "
        "runs).", show_default=False)] = None,
    top: Annotated[int, typer.Option(help="A sweep: how many of its best trials.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
    wide: WideOpt = False,
) -> None:
    """Compare runs: the config keys that differ and their metrics side by side, best marked.

    One PNG overlays their training and validation curves.

    A sweep folder stands for its best trials (--top).

    Example: dlrun runs diff runs/<stamp>-mnist-mlp runs/<stamp>-mnist-cnn
    """
    from dlrun import render
    from dlrun.runner.commands.runs_diff import diff_runs

    with error_boundary():
        diff = diff_runs(runs, runs_dir or ctx.obj or Path("runs"), out=out, top=top)
    if json_out:
        console.print_json(json.dumps(diff))
        return
    render.print_runs_diff(console, diff, wide=wide)


prepare_app = typer.Typer(help="Turn your own data into files dlrun trains on.\n\nExample: "
                          "dlrun prepare text corpus.txt --tokenizer bpe --out data/corpus",
                          no_args_is_help=True, add_completion=False)
app.add_typer(prepare_app, name="prepare")


@prepare_app.command("text")
def prepare_text_cmd(
    corpus: Annotated[Path, typer.Argument(help="A UTF-8 text file.", show_default=False)],
    tokenizer: Annotated[str, typer.Option(help="char or bpe (byte-level, trained here).",
                                           show_default=False)],
    out: Annotated[Path, typer.Option(help="The folder to write (train.bin, val.bin, "
                                           "tokenizer.json, meta.json).", show_default=False)],
    vocab_size: Annotated[int | None, typer.Option(
        help="BPE vocabulary size (default 512; at least 257).")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="The last fraction of the text kept for validation.")] = 0.1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Tokenize a text file into a token folder for the `token_file` dataset.

    The folder holds nanoGPT's train.bin and val.bin, tokenizer.json and meta.json.

    Example: dlrun prepare text corpus.txt --tokenizer bpe --vocab-size 4096 --out data/corpus
    """
    from dlrun import render
    from dlrun.runner.commands.prepare import prepare_text

    with error_boundary():
        result = prepare_text(corpus, tokenizer, out, vocab_size=vocab_size,
                              val_fraction=val_fraction)
    if json_out:
        console.print_json(json.dumps(result))
        return
    render.print_prepared(console, result)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
    sys.exit(0)
