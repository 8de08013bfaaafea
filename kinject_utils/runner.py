"""The one runner: execute the numbered notebooks in order with papermill and a YAML config.

    python -m kinject_utils.runner -f configs/tiny.yaml            # every notebook, in seconds
    python -m kinject_utils.runner -f configs/default.yaml         # the embedded CPU study
    python -m kinject_utils.runner -f configs/tiny.yaml --only 04 05

A config holds ``params`` given to every notebook that declares them, and ``notebooks`` with
per-notebook overrides keyed by number::

    name: tiny
    offline: true            # sets HF_HUB_OFFLINE=1 so a hub id fails at once
    params: {RESULTS_DIR: runs/tiny/results, TASK_SIZE: tiny}
    notebooks: {"03": {EPOCHS: 1}}

Executed copies go to ``runs/<name>/NN_*.ipynb`` (ignored by git). The run stops at the first
failing cell and prints it. Notebooks run with the repository root as working directory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from .io import project_root

__all__ = ["RunConfig", "load_config", "notebook_parameters", "run_notebooks", "main"]

_ALLOWED_TOP = {"name", "description", "offline", "params", "notebooks", "timeout_per_cell"}


class ConfigError(ValueError):
    """A runner config is malformed; the message names the file, the key and the fix."""


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a runner YAML config.

    Raises:
        ConfigError: unknown top-level keys, wrong types, or notebook keys that are not numbers.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found; the shipped ones are in configs/ "
                          "(tiny.yaml, default.yaml, paper_*.yaml)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(cfg).__name__}")
    unknown = set(cfg) - _ALLOWED_TOP
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_TOP)}")
    cfg.setdefault("name", path.stem)
    cfg.setdefault("offline", False)
    cfg.setdefault("params", {})
    cfg.setdefault("notebooks", {})
    if not isinstance(cfg["params"], dict):
        raise ConfigError(f"{path}: 'params' must be a mapping of NAME: value")
    if not isinstance(cfg["notebooks"], dict):
        raise ConfigError(f"{path}: 'notebooks' must map a notebook number ('03') to a mapping")
    nbs = {}
    for k, v in cfg["notebooks"].items():
        key = f"{int(k):02d}" if str(k).isdigit() else None
        if key is None or not isinstance(v, dict):
            raise ConfigError(f"{path}: notebooks.{k}: keys must be notebook numbers like '03' "
                              "and values mappings of NAME: value")
        nbs[key] = v
    cfg["notebooks"] = nbs
    if not isinstance(cfg["offline"], bool):
        raise ConfigError(f"{path}: 'offline' must be true or false, got {cfg['offline']!r}")
    return cfg


def list_notebooks(root: Path) -> list[Path]:
    """The numbered notebooks (``notebooks/NN_*.ipynb``) in order."""
    return sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(nb_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares (name -> papermill's inferred type/default/help)."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(nb_path)))


def run_notebooks(config: str | os.PathLike | dict, only: list[str] | None = None,
                  root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                  extra_params: dict[str, Any] | None = None, log_output: bool = False) -> list[Path]:
    """Execute the numbered notebooks with papermill; return the executed copies' paths.

    Args:
        config: a config path or an already-loaded config dict.
        only: notebook numbers to run (``["04", "05"]``); default all.
        root: repository root (default: found from cwd).
        out_dir: where executed copies go (default ``runs/<config name>``).
        extra_params: overrides applied last (given to every notebook that declares them).
        log_output: stream each cell's output (progress bars included) to the terminal.

    Raises:
        papermill.PapermillExecutionError: a cell failed; its notebook copy holds the traceback.
    """
    import papermill as pm
    from tqdm.auto import tqdm

    root = Path(root) if root else project_root()
    cfg = config if isinstance(config, dict) else load_config(config)
    if cfg.get("offline"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    out = Path(out_dir) if out_dir else root / "runs" / str(cfg["name"])
    out.mkdir(parents=True, exist_ok=True)
    notebooks = list_notebooks(root)
    if only:
        want = {f"{int(x):02d}" for x in only}
        notebooks = [p for p in notebooks if p.name[:2] in want]
        missing = want - {p.name[:2] for p in notebooks}
        if missing:
            raise ConfigError(f"--only names notebooks that do not exist: {sorted(missing)}")
    declared_anywhere: set[str] = set()
    plan = []
    for nb in notebooks:
        declared = notebook_parameters(nb)
        declared_anywhere |= set(declared)
        wanted = {**cfg["params"], **cfg["notebooks"].get(nb.name[:2], {}), **(extra_params or {})}
        plan.append((nb, {k: v for k, v in wanted.items() if k in declared}))
    if not only:
        unused = set(cfg["params"]) - declared_anywhere
        if unused:
            raise ConfigError(f"config '{cfg['name']}' sets parameters no notebook declares: "
                              f"{sorted(unused)} (typo?). `papermill --help-notebook NB` lists them.")
    executed = []
    bar = tqdm(plan, desc=f"kinject [{cfg['name']}]", unit="notebook")
    for nb, params in bar:
        bar.set_postfix_str(nb.name)
        dest = out / nb.name
        t0 = time.time()
        try:
            pm.execute_notebook(str(nb), str(dest), parameters=params, cwd=str(root),
                                kernel_name="python3", progress_bar=log_output, log_output=log_output,
                                execution_timeout=cfg.get("timeout_per_cell"))
        except pm.PapermillExecutionError as exc:
            bar.close()
            print(f"\n[kinject] {nb.name} FAILED in cell {exc.exec_count} "
                  f"(executed copy: {dest})\n--- cell source ---\n{exc.source}\n--- error ---\n"
                  f"{exc.ename}: {exc.evalue}", file=sys.stderr)
            raise
        tqdm.write(f"[kinject] {nb.name} ok in {time.time() - t0:.1f}s -> {dest}")
        executed.append(dest)
    return executed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m kinject_utils.runner``)."""
    ap = argparse.ArgumentParser(prog="python -m kinject_utils.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--config", default="configs/default.yaml", help="runner YAML config")
    ap.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. --only 04 05")
    ap.add_argument("--out", default=None, help="folder for executed notebooks (default runs/<name>)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="stream every cell's output (the notebooks' own progress bars) to the terminal")
    args = ap.parse_args(argv)
    import logging

    import papermill as pm

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    t0 = time.time()
    try:
        run_notebooks(args.config, only=args.only, out_dir=args.out, log_output=args.verbose)
    except ConfigError as exc:
        print(f"[kinject] config error: {exc}", file=sys.stderr)
        return 2
    except pm.PapermillExecutionError:
        return 1
    print(f"[kinject] all notebooks ok in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
