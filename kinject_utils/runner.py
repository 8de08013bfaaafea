"""The one runner: execute the numbered notebooks in order with papermill and a YAML config.

    python -m kinject_utils.runner -f configs/tiny.yaml            # every notebook, in seconds
    python -m kinject_utils.runner -f configs/default.yaml         # the embedded CPU study
    python -m kinject_utils.runner -f configs/tiny.yaml --only 04 05
    python -m kinject_utils.runner -f configs/tiny.yaml --set 03.EPOCHS=2 --set SEED=1
    python -m kinject_utils.runner -f configs/paper_mistral7b.yaml --plan   # what it would do, offline
    python -m kinject_utils.runner -f configs/paper_mistral7b.yaml --plan --workers 8 --set EXECUTOR=ray

The config format and its checks are in :mod:`kinject_utils.config` (``run:`` the notebooks it
executes, ``params`` for every notebook that declares them, ``notebooks: {"03": {...}}`` for one,
``extends:`` a base file); ``--only`` narrows ``run:``. Every key and
value is checked against the notebooks' declared parameters before anything runs.

Executed copies go to ``runs/<name>/NN_*.ipynb`` (ignored by git) with ``timings.json``, the wall
time of each notebook; the next run's progress bar uses it for its ETA. The run stops at the first
failing cell and logs it (the ``kinject.runner`` logger); the command line prints config errors.
Notebooks run in ``notebooks/``, the working directory JupyterLab gives them, so a run here and Run All
there resolve every path the same way (against the project root, :func:`kinject_utils.io.resolve_path`).
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from . import layout
from .config import ConfigError, RunSettings, apply_sets, load_settings, normalise_only
from .io import project_root
from .log import get_logger

__all__ = ["ConfigError", "RunSettings", "load_config", "list_notebooks", "notebook_parameters",
           "declared_parameters", "run_notebooks", "main"]

#: relative cost of each notebook when no earlier run's timings.json exists: the seconds each took in
#: the default study's reference run (2 cores, fp32, AVX-512 with AMX off; README), so a first run's ETA
#: is about right from the start (the old guess, 03 twice 05, put 03 at 60% of the run)
DEFAULT_WEIGHTS = {"01": 78.0, "02": 2.0, "03": 663.0, "04": 21.0, "05": 667.0, "06": 4.0}
_WRITABLE_PARAMS = ("RESULTS_DIR", "FIGURES_DIR")
log = get_logger("runner")


def load_config(path: str | os.PathLike, sets: list[str] | None = None) -> RunSettings:
    """Read and validate a runner YAML config (structure, types of fields, secrets).

    Raises:
        ConfigError: the message names the file, the key and the fix.
    """
    return load_settings(path, sets)


def list_notebooks(root: Path) -> list[Path]:
    """The numbered notebooks (``notebooks/NN_*.ipynb``) in order."""
    return sorted(p for p in (Path(root) / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(nb_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares (name -> papermill's inferred type/default/help)."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(nb_path)))


def declared_parameters(root: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """Notebook number -> its declared parameters, for every numbered notebook."""
    return {p.name[:2]: notebook_parameters(p) for p in list_notebooks(Path(root))}


def _as_settings(config: str | os.PathLike | dict | RunSettings, sets: list[str] | None) -> RunSettings:
    if isinstance(config, RunSettings):
        return load_settings_from_raw(vars(config).copy(), sets) if sets else config
    if isinstance(config, dict):
        return load_settings_from_raw(dict(config), sets)
    return load_settings(config, sets)


def load_settings_from_raw(raw: dict[str, Any], sets: list[str] | None = None) -> RunSettings:
    """A :class:`RunSettings` from an already-read mapping (``--set`` items applied)."""
    return RunSettings.from_dict(apply_sets(raw, sets or []))


def _default_of(info: dict[str, Any]) -> Any:
    try:
        return ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError):
        return None


def check_writable(path: Path, what: str) -> None:
    """Create ``path`` if needed and write a probe file in it.

    Raises:
        ConfigError: one line naming the path, the reason and the fix.
    """
    probe = path / f".kinject-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable ({exc.strerror or type(exc).__name__}). Fix: make it "
                          f"writable (chmod u+w, or remove the file in its way), or choose another folder "
                          f"({'--out DIR' if what == 'runs folder' else '--set ' + what + '=DIR'}).") from None


class _Relay(io.TextIOBase):
    """The running notebook's stderr, as papermill streams it: every line the package logs at WARNING or
    above (and the paraphrase client's "waiting for" heartbeat) goes to the runner's terminal at once,
    with the notebook's name; the warnings are kept for the end-of-run summary."""

    _WARN = re.compile(r"^\[kinject[\w.-]*\] (WARNING|ERROR|CRITICAL) ")
    _BEAT = re.compile(r"^\[kinject[\w.-]*\] INFO waiting for ")

    def __init__(self, notebook: str, emit: Any, warnings: list[str], quiet: bool = False):
        self.notebook, self.emit, self.warnings, self.quiet, self._buf = notebook, emit, warnings, quiet, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            line = line.rstrip("\r")
            warn = bool(self._WARN.match(line))
            if warn:
                self.warnings.append(f"{self.notebook}: {line}")
            if (warn or self._BEAT.match(line)) and not self.quiet:
                self.emit(f"[kinject] {self.notebook}: {line}")
        return len(text)


def _weights(timings_file: Path, nums: list[str]) -> tuple[dict[str, float], str]:
    try:
        last = json.loads(timings_file.read_text(encoding="utf-8"))["seconds"]
        if all(isinstance(last.get(n), (int, float)) and last[n] > 0 for n in nums):
            return {n: float(last[n]) for n in nums}, f"ETA from the last run ({timings_file.name})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {n: DEFAULT_WEIGHTS.get(n, 60.0) for n in nums}, "ETA from fixed weights (no earlier run)"


def _save_timings(timings_file: Path, done: dict[str, float]) -> None:
    from .io import write_json

    try:
        old = json.loads(timings_file.read_text(encoding="utf-8")).get("seconds", {})
    except (OSError, ValueError, AttributeError):
        old = {}
    write_json(timings_file, {"seconds": {**old, **{k: round(v, 2) for k, v in done.items()}},
                                     "updated": time.strftime("%Y-%m-%d %H:%M:%S")})


def timing_table(done: dict[str, float], names: dict[str, str]) -> str:
    """The 'where the time went' table: notebook, seconds, share of the run."""
    total = sum(done.values()) or 1.0
    rows = [f"  {'notebook':<28} {'wall':>10} {'share':>6}"]
    for num, sec in done.items():
        rows.append(f"  {names.get(num, num):<28} {_fmt(sec):>10} {100 * sec / total:5.1f}%")
    rows.append(f"  {'total':<28} {_fmt(sum(done.values())):>10}")
    return "\n".join(rows)


def _fmt(sec: float) -> str:
    return f"{sec:.1f}s" if sec < 90 else f"{int(sec // 60)}m {sec % 60:02.0f}s"


def prepare(config: str | os.PathLike | dict | RunSettings, only: list[str] | None = None,
            root: str | os.PathLike | None = None, extra_params: dict[str, Any] | None = None,
            sets: list[str] | None = None) -> tuple[RunSettings, list[tuple[Path, dict[str, Any]]], dict]:
    """Load and check everything a run needs, writing nothing: ``(settings, [(notebook, params)], declared)``.

    Raises:
        ConfigError: any problem in the config, ``--set`` items or ``--only``.
    """
    root = Path(root) if root else project_root()
    settings = _as_settings(config, sets)
    if extra_params:
        settings = load_settings_from_raw({**vars(settings), "params": {**settings.params, **extra_params}})
    notebooks = list_notebooks(root)
    declared = {p.name[:2]: notebook_parameters(p) for p in notebooks}
    wanted = normalise_only(only, sorted(declared))
    settings.check_against(declared, only=wanted)
    selected = settings.selected(sorted(declared), wanted)
    chosen = [p for p in notebooks if p.name[:2] in selected]
    plan = [(nb, settings.parameters_for(nb.name[:2], declared[nb.name[:2]])) for nb in chosen]
    _warn_unbuilt_tasks(plan, declared)
    return settings, plan, declared


def _warn_unbuilt_tasks(plan: list[tuple[Path, dict[str, Any]]], declared: dict) -> None:
    """Warn before anything runs when a notebook is given tasks that this run's notebook 01 will not build."""
    tasks = {nb.name[:2]: params.get("TASKS", _default_of(declared[nb.name[:2]]["TASKS"]))
             for nb, params in plan if "TASKS" in declared[nb.name[:2]]}
    built = tasks.get("01")
    if not isinstance(built, list):
        return
    for num, names in tasks.items():
        extra = [t for t in names or [] if t not in built] if num != "01" else []
        if extra:
            log.warning("notebook %s is given TASKS=%s, and notebook 01 builds %s: %s will be skipped there. Fix: "
                        "set TASKS under params: (every notebook gets it), not under notebooks: \"01\".",
                        num, names, built, extra)


def run_notebooks(config: str | os.PathLike | dict | RunSettings, only: list[str] | None = None,
                  root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                  extra_params: dict[str, Any] | None = None, log_output: bool = False,
                  sets: list[str] | None = None) -> list[Path]:
    """Execute the numbered notebooks with papermill; return the executed copies' paths.

    Args:
        config: a config path, a loaded :class:`RunSettings`, or a mapping of its fields.
        only: notebook numbers to run (``["04", "05"]``), within the config's ``run`` list; default all of it.
        root: repository root (default: found from cwd).
        out_dir: where executed copies go (default ``runs/<config name>``).
        extra_params: overrides of ``params`` (given to every notebook that declares them).
        log_output: stream each cell's output (progress bars included) to the terminal.
        sets: ``--set`` items (``KEY=VALUE`` or ``NN.KEY=VALUE``, YAML values).

    Raises:
        ConfigError: a config problem, or a folder that cannot be written (before anything runs).
        papermill.PapermillExecutionError: a cell failed; its notebook copy holds the traceback.
    """
    import papermill as pm

    from .log import progress

    root = Path(root) if root else project_root()
    settings, plan, declared = prepare(config, only, root, extra_params, sets)
    out = Path(out_dir) if out_dir else layout.runs_dir(root, settings.name)
    check_writable(out, "runs folder")
    for nb, params in plan:
        for key in _WRITABLE_PARAMS:
            if key in declared[nb.name[:2]]:
                value = params.get(key, _default_of(declared[nb.name[:2]][key]))
                if isinstance(value, str) and value:
                    check_writable(root / value if not Path(value).is_absolute() else Path(value), key)
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    timings_file = layout.timings_json(out)
    nums = [nb.name[:2] for nb, _ in plan]
    weights, eta_source = _weights(timings_file, nums)
    names = {nb.name[:2]: nb.stem for nb, _ in plan}
    log.info("%s: %d notebook(s); %s", settings.name, len(plan), eta_source)
    done: dict[str, float] = {}
    executed = []
    warnings: list[str] = []
    bar = progress(total=round(sum(weights.values()), 2), desc=f"kinject [{settings.name}]", unit="w",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
    t_run = time.time()
    for nb, params in plan:
        num = nb.name[:2]
        bar.set_postfix_str(nb.name)
        dest = out / nb.name
        t0 = time.time()
        relay = _Relay(nb.stem, lambda line: bar.write(line, file=sys.stderr), warnings, quiet=log_output)
        try:
            pm.execute_notebook(str(nb), str(dest), parameters=params, cwd=str(nb.parent),
                                kernel_name="python3", progress_bar=log_output, log_output=log_output,
                                stderr_file=relay, execution_timeout=settings.timeout_per_cell)
        except pm.PapermillExecutionError as exc:
            bar.close()
            _summarise_warnings(warnings)
            log.error("%s FAILED in cell %s after %s (executed copy: %s)\n--- cell source ---\n%s\n--- error ---\n"
                      "%s: %s", nb.name, exc.exec_count, _fmt(time.time() - t0), dest, exc.source, exc.ename,
                      exc.evalue)
            if done:
                log.info("time so far:\n%s", timing_table(done, names))
            raise
        done[num] = time.time() - t0
        _save_timings(timings_file, {num: done[num]})
        bar.update(weights[num])
        bar.write(f"[kinject] {nb.name} ok in {_fmt(done[num])} -> {dest}")
        executed.append(dest)
    bar.close()
    _summarise_warnings(warnings)
    log.info("where the time went (%s, %s in all; saved to %s):\n%s", settings.name, _fmt(time.time() - t_run),
             timings_file, timing_table(done, names))
    return executed


def _summarise_warnings(warnings: list[str]) -> None:
    if warnings:
        log.warning("%d warning(s) in this run (each notebook's executed copy has the context):\n  %s",
                    len(warnings), "\n  ".join(warnings))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m kinject_utils.runner``)."""
    ap = argparse.ArgumentParser(prog="python -m kinject_utils.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--config", default="configs/default.yaml", help="runner YAML config")
    ap.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. --only 04 05")
    ap.add_argument("--out", default=None, help="folder for executed notebooks (default runs/<name>)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="[NN.]KEY=VALUE",
                    help="override a parameter (YAML value), e.g. --set EPOCHS=3 or --set 03.EPOCHS=3; repeatable")
    ap.add_argument("--plan", action="store_true",
                    help="print what each notebook would load, on which device, tokens, steps and expected "
                         "time, then exit (offline; runs nothing)")
    ap.add_argument("--workers", type=int, default=0, metavar="N",
                    help="with --plan: schedule notebook 03's adapters and 05's jobs on N GPUs or CPU slots "
                         "(EXECUTOR: ray) and print each worker's jobs and the expected wall time")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="stream every cell's output (the notebooks' own progress bars) to the terminal")
    args = ap.parse_args(argv)
    import logging

    import papermill as pm

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.plan:
            from .plan import format_plan, plan_run

            settings, chosen, declared = prepare(args.config, only=args.only, sets=args.sets)
            print(format_plan(plan_run(settings, chosen, declared, workers=args.workers)))
            last = layout.timings_json(args.out or layout.runs_dir(project_root(), settings.name))
            if last.exists():
                secs = json.loads(last.read_text(encoding="utf-8")).get("seconds", {})
                print(f"last run of {settings.name} here ({last}):\n" + timing_table(secs, {}))
            return 0
        run_notebooks(args.config, only=args.only, out_dir=args.out, log_output=args.verbose, sets=args.sets)
    except ConfigError as exc:
        print(f"[kinject] config error: {exc}", file=sys.stderr)
        return 2
    except pm.PapermillExecutionError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
