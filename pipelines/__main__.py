"""Command line: `python -m pipelines <stage|all> --config configs/x.yaml [--set key=value] [--force]`.

It only parses, loads the config (failing before any work on a bad key or value), takes the workspace lock
and calls the stages from the registry in `pipelines/stages/__init__.py`. A problem the user can fix prints
one line; any other error is a bug, and `--debug` (or `PIPELINES_DEBUG=1`) shows its traceback.
`python -m pipelines init DATA` proposes a config for the user's own data (pipelines/data/propose.py).
TensorFlow's, LiteRT's and absl's own log lines stay off the terminal unless `--verbose`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from pipelines.core import config as config_module
from pipelines.core.errors import PipelineError
from pipelines.stages import BY_NAME, STAGES, pipeline

ALL = "every stage of the pipeline in order, as one MLflow parent run with a nested run per stage"
WORKER = "join a running search (make tune) from another shell or machine: takes its trials until it closes"
SERVER = "the MLflow tracking server and UI over the project's store, serving artifacts (make ui, make server)"
INIT = ("propose configs/<name>.yaml for your data: a folder of class sub-folders of images, a CSV table, or a "
        "folder of sensor recording CSV files (make init DATA=...)")
VERBOSE = "show TensorFlow's, LiteRT's and absl's own log lines (kept off the terminal by default)"

# What TensorFlow, LiteRT (TF-Lite) and absl write to the process's stderr from C++, which Python cannot
# silence at the source: absl's log lines ("W0000 00:00:1733222222.1 123 file.cc:45] ..."), TensorFlow's
# older ones ("2026-12-03 07:30:00.1: I tensorflow/..."), LiteRT's minimal logger ("INFO: Created TensorFlow
# Lite XNNPACK delegate for CPU."), absl's pre-init banner ("WARNING: All log messages before
# absl::InitializeLog() ..."), the quantizer's and converter's printouts ("fully_quantize: 0, inference_type:
# 6, ...", "Estimated count of arithmetic ops: ..."), and Python loggers in the default format
# ("WARNING:absl:..."). Fatal lines (F0000, ERROR: ...) and anything else still reach the terminal.
CHATTER = (r"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ ]+:\d+\] |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
           r"|(?:INFO|WARNING|VERBOSE|DEBUG): |(?:DEBUG|INFO|WARNING):(?:absl|tensorflow|h5py):|fully_quantize: "
           r"|Estimated count of arithmetic ops)|tensorflow/|XNNPACK")
# Python warnings raised inside these packages (the converter's "Statistics for quantized inputs were expected",
# tf.lite.Interpreter's deprecation) are theirs too.
WARNING_MODULES = r"(?:tensorflow|tf_keras|tensorflow_model_optimization|tensorflow_hub|ai_edge_litert|absl)(?:\.|$)"
# The filter is a process of its own, so that what a crashing process writes last still gets through.
FILTER = ("import re, signal, sys\n"
          "signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pipeline's to handle\n"
          "chatter = re.compile(sys.argv[1].encode())\n"
          "for line in sys.stdin.buffer:\n"
          "    if not chatter.search(line):\n"
          "        sys.stdout.buffer.write(line)\n"
          "        sys.stdout.buffer.flush()\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    fields = "config fields (--set key=value):\n" + "\n".join(config_module.describe())
    entries = [(stage.name, stage.description + ("" if stage.in_all else " (not in 'all')"), stage.options)
               for stage in STAGES]
    entries.append(("all", ALL, tuple({option for stage in pipeline() for option in stage.options})))
    for name, text, options in entries:
        sub = commands.add_parser(name, help=text, description=text, epilog=fields,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", help="experiment YAML file (default: built-in defaults)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                         help="override one config field, e.g. train.epochs=3 (repeatable)")
        sub.add_argument("--force", action="store_true", help="rerun even if inputs and config are unchanged")
        sub.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for another run on the same workspace (default: stop at once)")
        sub.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
        sub.add_argument("--verbose", action="store_true", help=VERBOSE)
        for option in options:
            sub.add_argument(option.flag, action="store_true", help=option.help)
    sub = commands.add_parser("tune-worker", help=WORKER, description=WORKER)
    sub.add_argument("--config", help="the same experiment YAML file as the search's")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    sub.add_argument("--idle", type=float, default=600.0, metavar="SECONDS",
                     help="stop after this long with no trial waiting or running (default: 600)")
    sub.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = commands.add_parser("server", help=SERVER, description=SERVER)
    sub.add_argument("--config", help="experiment YAML file; its runtime.root holds the store")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    sub.add_argument("--port", type=int, default=5000)
    sub.add_argument("--backend", default="", metavar="URI",
                     help="database URI of the store (default: the project's SQLite file in mlruns/)")
    sub.add_argument("--workers", type=int, default=1, help="server worker processes (default: 1)")
    sub.add_argument("--allowed-hosts", default="", metavar="HOSTS",
                     help="Host headers the server admits besides localhost, comma-separated (e.g. tracker.lan:5000)")
    sub = commands.add_parser("init", help=INIT, description=INIT)
    sub.add_argument("data", help="the data: a folder of class folders of images, a CSV file, or a folder of "
                     "recording CSV files")
    sub.add_argument("--name", default="", help="the config's and experiment's name (default: the data's name)")
    sub.add_argument("--target", default="", metavar="COLUMN", help="the table's target, or the recordings' label "
                     "column, when init cannot tell it")
    sub.add_argument("--time", default="", metavar="COLUMN", help="the recordings' time column, when init cannot "
                     "tell it")
    sub.add_argument("--sampling-rate", type=float, default=0.0, metavar="HZ",
                     help="the recordings' samples per second, when they have no time column")
    sub.add_argument("--force", action="store_true", help="overwrite an existing configs/<name>.yaml")
    return parser


def init(args: argparse.Namespace) -> int:
    """`init DATA`: writes configs/<name>.yaml proposed for the data, and says what to run next."""
    from pipelines.data import propose

    data = Path(args.data)
    name = args.name or propose.default_name(data)
    path = Path("configs") / f"{name}.yaml"
    try:
        propose.check_name(name)
        proposal = propose.propose(data, propose.config_path(data, Path.cwd()), target=args.target,
                                   time_column=args.time, sampling_rate=args.sampling_rate)
        propose.write(proposal, path, name, args.data, force=args.force)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.data}: {proposal.found}")
    width = max(len(choice.key) for choice in proposal.choices)
    for choice in proposal.choices:
        print(f"  {choice.key:{width}s}  {propose.flow(choice.value)}")
    print(f"wrote {path} (each field with the reason it was chosen)\nnext: make pipeline CONFIG={path}")
    return 0


@contextlib.contextmanager
def native_chatter_filtered():
    """For the block, what C++ code writes to file descriptor 2 passes a filter process that drops the lines
    matching CHATTER; Python's own stderr (errors, the tune bar) keeps writing to the terminal directly. Where
    the filter cannot start, output is left as it is."""
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.dup(2)
    try:
        child = subprocess.Popen([sys.executable, "-S", "-c", FILTER, CHATTER], stdin=subprocess.PIPE,
                                 stdout=terminal)
    except OSError:
        os.close(terminal)
        yield
        return
    python_stderr = sys.stderr
    try:
        own = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's captured stream
        own = False
    if own:
        sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding=python_stderr.encoding,
                          errors=python_stderr.errors)
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if own:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)
        child.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child process of the run may still hold it
            child.wait(timeout=5)


def quiet(verbose: bool) -> contextlib.AbstractContextManager:
    """TensorFlow, LiteRT and absl kept off the terminal (`--verbose`: every line of theirs shown)."""
    if verbose:
        if "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return contextlib.nullcontext()
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=WARNING_MODULES)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model download in export
    return native_chatter_filtered()


def run_all(config: config_module.Config, force: bool, options: dict) -> list:
    """Every stage of `all` under one MLflow parent run; the test metrics are repeated on the parent."""
    import mlflow

    from pipelines.core import tracking

    results = []
    with tracking.run(config, "pipeline"):
        for stage in pipeline():
            results.append(stage.run(config, force, **options))
        if all(result.skipped for result in results):  # say so, rather than repeat old scores as new ones
            mlflow.set_tags({"skipped": "true", "mlflow.runName": "pipeline (nothing changed, every stage skipped)"})
        else:
            tracking.log_metrics({key: value for result in results for key, value in result.metrics.items()
                                  if isinstance(value, (int, float)) and key.startswith("test/")})
    return results


def _summary(config: config_module.Config, results: list, seconds: float) -> None:
    from pipelines.core import tracking, workspace

    print(f"\nfinished in {seconds:.1f}s")
    for result in results:
        state = "skipped (unchanged)" if result.skipped else f"run {result.run_id}"
        print(f"  {result.stage:9s} {result.seconds:7.1f}s  {state:38s} {result.folder}")
    print(f"MLflow store: {tracking.tracking_uri(config.root)}  (browse: make ui)")
    if any(result.stage == "export" for result in results):
        print(f"edge bundle: {workspace.bundle_dir(config.root, config.experiment)}")


def _mlflow_line(message: str) -> str:
    """An MLflow error in one line: a database's own cause without the SQL statement and its parameters, and a
    read-only store named with what to do."""
    import mlflow

    lines = [line.strip() for line in message.splitlines() if line.strip()
             and not line.strip().startswith(("[SQL:", "[parameters:", "(Background on", "(raised as a result"))]
    cause = next((line for line in lines if line.startswith(("(sqlite3.", "(psycopg"))), None)
    text = cause or (lines[0] if lines else message.strip())
    unreachable = re.search(r"API request to (https?://[^/\s]+)\S* failed .*(Connection refused|timed out|Name or "
                            r"service not known|Temporary failure in name resolution)", text)
    if unreachable:
        return (f"cannot reach the tracking server {unreachable.group(1)} ({unreachable.group(2).lower()}, after "
                f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '2')} quick retries); start it (make server) or "
                "point MLFLOW_TRACKING_URI at a running one")
    if "readonly database" in text or "read-only" in text:
        return (f"the tracking store {mlflow.get_tracking_uri()} is read-only for this user ({text}); give write "
                "access to its folder, or point MLFLOW_TRACKING_URI at a store you can write")
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.stage == "init":
        return init(args)
    debug = getattr(args, "debug", False) or os.environ.get("PIPELINES_DEBUG", "") not in ("", "0")
    verbose = getattr(args, "verbose", False)
    try:
        config = config_module.load(args.config, args.overrides)
    except config_module.ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.stage == "server":
        from pipelines.core import server

        try:
            server.serve(config.root, args.host, args.port, args.backend, args.workers, args.allowed_hosts)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    with quiet(verbose):
        return _run(args, config, debug, verbose)


def _run(args: argparse.Namespace, config: config_module.Config, debug: bool, verbose: bool) -> int:
    import models

    if verbose:
        import tensorflow  # noqa: F401  (its start-up lines shown)
    models.load_tensorflow()  # before MLflow and the stages import it, so its start-up chatter stays quiet
    with _watching_interrupts():
        return _guarded(args, config, debug)


@contextlib.contextmanager
def _watching_interrupts():
    """Python's Ctrl-C handler replaced by `_on_interrupt` for the block (main thread, default handler only)."""
    _SIGNALLED.clear()
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # a caller's own handler stays
        yield
        return
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _guarded(args: argparse.Namespace, config: config_module.Config, debug: bool) -> int:
    """Runs the stage; every error becomes one line and an exit code (130 for Ctrl-C)."""
    from mlflow.exceptions import MlflowException

    from pipelines.core import workspace

    options = {name: value for name, value in vars(args).items()
               if name not in ("stage", "config", "overrides", "force", "wait", "debug", "idle", "verbose")}
    started = time.perf_counter()
    try:
        results = _stages(args, config, options)
        if results is None:  # a tune-worker: its trials are the search's
            return 0
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: staging is discarded, the run marked failed; a rerun resumes
        return _interrupted(args.stage)
    except MlflowException as error:  # the store or server refused: its message says why
        if debug:
            raise
        print(f"MLflow error: {_mlflow_line(error.message)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    except Exception as error:  # a bug, in the project or a library: say so, and where to see more
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) and not debug:
            where = error.filename or config.root  # a failed write() names no file: the workspace, then
            print(f"error: {os.strerror(error.errno).lower()} writing under {where} ({args.stage}: nothing "
                  "half-written was kept; the previous outputs stand)", file=sys.stderr)
            return 1
        if type(error).__name__ == "DataLossError" and not debug:  # tf.data streaming a corrupt shard record
            from pipelines.data import shards

            where = shards.find_corrupt(workspace.stage_dir(config.root, config.experiment, "clean") / "shards")
            print(f"error: {where or 'a shard of ' + config.experiment}: a record fails its CRC: the shard is "
                  "corrupt; rerun clean --force", file=sys.stderr)
            return 1
        if debug:
            raise
        print(f"unexpected error: {type(error).__name__}: {error}\n"
              "  rerun with --debug (or PIPELINES_DEBUG=1) for the traceback", file=sys.stderr)
        return 1
    _summary(config, results, time.perf_counter() - started)
    return 0


def _stages(args: argparse.Namespace, config: config_module.Config, options: dict) -> list | None:
    """The stage's (or `all`'s) results, None for a tune-worker. An error raised after a Ctrl-C (a library that
    turned the KeyboardInterrupt into its own error, a cleanup that failed while unwinding) is the interrupt."""
    from pipelines.core import cluster, workspace

    try:
        if args.stage == "tune-worker":  # no workspace lock: the search it joins holds it
            from pipelines.training import tuning

            tuning.work(config, args.idle)
            return None
        if config.runtime.strategy == "multi_worker":
            from pipelines.training import fitting

            fitting.strategy(config.runtime)  # before any other TensorFlow op, as collective ops require
        # One lock per workspace; a multi-worker cluster's other workers run beside their chief, writing nowhere.
        lock = workspace.locked(config.root, config.experiment, timeout=args.wait) \
            if cluster.is_chief(config.runtime.strategy) else contextlib.nullcontext()
        with lock:
            if args.stage == "all":
                return run_all(config, args.force, options)
            return [BY_NAME[args.stage].run(config, args.force, **options)]
    except Exception as error:
        if _from_interrupt(error):
            raise KeyboardInterrupt from error
        raise


def _interrupted(stage: str) -> int:
    print(f"interrupted; rerun resumes ({stage}: a stage's unfinished outputs were discarded)", file=sys.stderr)
    return 130


_SIGNALLED = []  # set by `_on_interrupt` when this process got a SIGINT


def _on_interrupt(signum, frame) -> None:
    """Python's own Ctrl-C handler (raises KeyboardInterrupt), remembering that it ran: a library that catches
    the KeyboardInterrupt and raises its own error (TensorFlow's Python callbacks do) still ends as an interrupt."""
    _SIGNALLED.append(signum)
    signal.default_int_handler(signum, frame)


def _from_interrupt(error: BaseException) -> bool:
    """Whether `error` was raised after a Ctrl-C: this process got SIGINT, or a KeyboardInterrupt is in the
    error's cause or context chain."""
    if _SIGNALLED:
        return True
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before a stage started (while the libraries load, or in init)
        print("interrupted before any stage started", file=sys.stderr)
        sys.exit(130)
