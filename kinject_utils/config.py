"""The runner's configuration layer: one validated :class:`RunSettings` per YAML file.

A config file's keys are the dataclass's fields::

    extends: paper_base.yaml   # optional: a base file (relative to this one), deep-merged underneath
    name: tiny                 # executed notebooks go to runs/<name>/
    run: ["01", "02", "03"]    # the notebooks this config runs, in number order (default: every one)
    description: ...
    offline: true              # sets HF_HUB_OFFLINE=1 so a hub id fails at once
    timeout_per_cell: 600      # seconds (null: none)
    params: {RESULTS_DIR: runs/tiny/results, TASK_SIZE: tiny}   # every notebook that declares them
    notebooks: {"03": {EPOCHS: 1}}                              # one notebook only

:meth:`RunSettings.check_against` validates every parameter against the notebooks' own declared
parameters (papermill's inspection): unknown names (with a close match), notebook numbers that
do not exist (in ``notebooks:`` or ``run:``), values of the wrong type (``TASKS: fictional_news``
where a list is declared); on construction it rejects secrets (an API key pasted into a parameter,
or a ``*_ENV`` value that is not a variable's NAME: :mod:`kinject_utils.secrets`). Messages name the
key, never a secret's value, and the fix. All of this runs before papermill writes anything.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .secrets import check_env_name, looks_like_secret
from .settings import check_known_fields

__all__ = ["ConfigError", "RunSettings", "load_settings", "parse_set", "apply_sets", "normalise_only",
           "check_value_type"]

FIELDS = ("name", "description", "offline", "run", "params", "notebooks", "timeout_per_cell", "extends")
_TYPE_EXAMPLES = {"list": "[fictional_news]", "dict": "{fictional_news: 20}", "int": "3", "float": "0.5",
                  "str": "\"text\"", "bool": "true"}


class ConfigError(ValueError):
    """A runner config is malformed; the message names the file, the key and the fix."""


# ---- YAML ------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: ``1e-3`` and ``2E5`` are numbers, not strings
    (YAML 1.1, PyYAML's default, needs a dot: ``1.0e-3``); everything else reads as before."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Read YAML text the way every kinject config and ``--set`` value is read (:class:`_Loader`).

    Example:
        >>> load_yaml("lr: 1e-3")
        {'lr': 0.001}
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ---- secrets ---------------------------------------------------------------------------------------
def _secret_problem(key: str, value: Any) -> str | None:
    """A message for a secret under ``key``: a ``*_ENV`` value that is no variable name
    (:func:`kinject_utils.secrets.check_env_name`), or a value that looks like a key. Never the value."""
    if key.endswith("_ENV"):
        try:
            check_env_name(value, key)
        except ValueError as exc:
            return str(exc)
        return None
    vals = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    if any(looks_like_secret(v) for v in vals):
        return (f"{key} holds a value that looks like an API key or token. Secrets never go in a config "
                "or notebook parameter (papermill writes parameters into the executed notebook). Fix: "
                "export it in your shell and pass the variable's NAME through a *_ENV parameter "
                "(e.g. OPENAI_API_KEY_ENV: OPENAI_API_KEY). The value was not printed or written anywhere.")
    return None


# ---- types -----------------------------------------------------------------------------------------
def check_value_type(key: str, value: Any, type_name: str) -> str | None:
    """A message naming the expected type and an example when ``value`` does not fit ``type_name``
    (papermill's inferred type: list, dict, int, float, str, bool); ``None`` when it fits."""
    t = type_name.strip().lower()
    ok = {"list": lambda v: isinstance(v, list),
          "dict": lambda v: isinstance(v, dict),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          "bool": lambda v: isinstance(v, bool)}.get(t)
    if ok is None or ok(value):
        return None
    example = _TYPE_EXAMPLES[t]
    if t == "list" and isinstance(value, (str, int, float)):
        example = f"[{value}]"
    got = type(value).__name__ if value is not None else "null"
    article = "an" if t == "int" else "a"
    return f"{key} must be {article} {t}, e.g. {example} (got {got})"


def _value_problem(key: str, value: Any, declared: dict[str, Any]) -> str | None:
    """A value that does not fit the notebook's declared type, or a mapping of a settings dataclass's
    fields with a misspelt one (``FT_SETTINGS: {lrr: 1e-3}`` answers "did you mean lr?" before anything runs)."""
    problem = check_value_type(key, value, declared.get("inferred_type_name", ""))
    if problem or key not in _FIELD_MAPPINGS or not isinstance(value, dict):
        return problem
    try:
        check_known_fields(_FIELD_MAPPINGS[key](), value)
    except ValueError as exc:
        return str(exc)
    return None


def _finetune_config() -> type:
    from .finetune.config import FinetuneConfig  # imported when needed: the config layer stays light

    return FinetuneConfig


#: parameters that hold a mapping of a settings dataclass's fields -> that dataclass
_FIELD_MAPPINGS = {"FT_SETTINGS": _finetune_config}


# ---- the settings ----------------------------------------------------------------------------------
@dataclasses.dataclass
class RunSettings:
    """One runner config, validated on construction (structure only; see :meth:`check_against`)."""

    name: str = "run"
    description: str = ""
    offline: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    notebooks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    run: list[str] | None = None
    timeout_per_cell: float | None = None
    extends: str | None = None
    source: str = dataclasses.field(default="<config>", compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> RunSettings:
        """Build from a config mapping (a YAML file's keys, or a dict given to the runner).

        Raises:
            ConfigError: an unknown key (with "did you mean"), or anything ``__post_init__`` rejects.
        """
        raw = dict(raw)
        source = str(raw.pop("source", source))
        _check_fields(raw, source)
        return cls(**raw, source=source)

    def __post_init__(self) -> None:
        where = self.source
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ConfigError(f"{where}: 'name' must be a short folder name (letters, digits, _ . -), "
                              f"got {self.name!r}; executed notebooks go to runs/<name>/")
        if not isinstance(self.description, str):
            raise ConfigError(f"{where}: 'description' must be text")
        if not isinstance(self.offline, bool):
            raise ConfigError(f"{where}: 'offline' must be true or false, got {self.offline!r}")
        if self.timeout_per_cell is not None and (isinstance(self.timeout_per_cell, bool) or not isinstance(
                self.timeout_per_cell, (int, float)) or self.timeout_per_cell <= 0):
            raise ConfigError(f"{where}: 'timeout_per_cell' must be a number of seconds > 0 (e.g. "
                              "timeout_per_cell: 600) or null for no limit; got a "
                              f"{type(self.timeout_per_cell).__name__}")
        if not isinstance(self.params, dict):
            raise ConfigError(f"{where}: 'params' must be a mapping of NAME: value, e.g. params: {{SEED: 0}}")
        if not isinstance(self.notebooks, dict):
            raise ConfigError(f"{where}: 'notebooks' must map a notebook number to a mapping, "
                              "e.g. notebooks: {\"03\": {EPOCHS: 1}}")
        nbs: dict[str, dict[str, Any]] = {}
        for k, v in self.notebooks.items():
            if not re.fullmatch(r"\d{1,2}", str(k)) or not isinstance(v, dict):
                raise ConfigError(f"{where}: notebooks.{k}: keys must be notebook numbers like \"03\" and "
                                  "values mappings of NAME: value, e.g. notebooks: {\"03\": {EPOCHS: 1}}")
            nbs[f"{int(k):02d}"] = v
        self.notebooks = nbs
        if self.run is not None:
            self.run = _notebook_numbers(self.run, where)
        for scope, mapping in [("params", self.params)] + [(f"notebooks.{n}", m) for n, m in nbs.items()]:
            for key, value in mapping.items():
                problem = _secret_problem(str(key), value)
                if problem:
                    raise ConfigError(f"{where}: {scope}.{key}: {problem}")

    # ---- checks against the notebooks ---------------------------------------------------------------
    def check_against(self, declared: dict[str, dict[str, dict[str, Any]]], only: list[str] | None = None) -> None:
        """Validate every parameter against ``declared`` (notebook number -> papermill parameters).

        Raises:
            ConfigError: a notebook number that does not exist, a key the notebook does not declare
                (with its allowed keys and a close match), a top-level key no notebook declares,
                or a value of the wrong type.
        """
        where = self.source
        for num in self.run or []:
            if num not in declared:
                raise ConfigError(f"{where}: run: there is no notebook {num}; the notebooks are "
                                  f"{', '.join(sorted(declared))}. Fix: remove {num} from 'run' (or leave 'run' "
                                  "out to run every notebook).")
        for num, over in self.notebooks.items():
            if num not in declared:
                raise ConfigError(f"{where}: notebooks.{num}: there is no notebook {num}; the notebooks are "
                                  f"{', '.join(sorted(declared))}. Fix the number or remove the section.")
            allowed = declared[num]
            for key in over:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), list(allowed), n=1)
                    hint = f" Did you mean {close[0]}?" if close else ""
                    raise ConfigError(f"{where}: notebooks.{num}.{key}: notebook {num} has no parameter {key}."
                                      f"{hint} Its parameters: {', '.join(sorted(allowed))}.")
                problem = _value_problem(key, over[key], allowed[key])
                if problem:
                    raise ConfigError(f"{where}: notebooks.{num}.{key}: {problem}")
        every = {k: v for num in sorted(declared) for k, v in declared[num].items()}
        if not only:
            unused = sorted(set(self.params) - set(every))
            if unused:
                close = {u: difflib.get_close_matches(u, list(every), n=1) for u in unused}
                hints = "; ".join(f"{u} -> {c[0]}?" for u, c in close.items() if c)
                raise ConfigError(f"{where}: params sets {unused}, which no notebook declares (typo?"
                                  f"{' ' + hints if hints else ''}). `papermill --help-notebook NB` lists "
                                  "each notebook's parameters.")
        for key, value in self.params.items():
            if key in every:
                problem = _value_problem(key, value, every[key])
                if problem:
                    raise ConfigError(f"{where}: params.{key}: {problem}")

    def selected(self, existing: list[str], only: list[str] | None = None) -> list[str]:
        """The notebook numbers to execute, in order: ``run`` (default ``existing``), narrowed by ``--only``.

        Raises:
            ConfigError: an ``--only`` number outside this config's ``run`` list.
        """
        run = [n for n in sorted(existing) if self.run is None or n in self.run]
        outside = sorted(set(only or []) - set(run))
        if outside:
            raise ConfigError(f"{self.source}: --only {' '.join(outside)}: not in this config's run list "
                              f"({', '.join(run)}); --only narrows that list. Fix: pick from it, or widen it "
                              f"with --set run=[{', '.join(sorted(set(run) | set(outside)))}].")
        return [n for n in run if not only or n in only]

    def parameters_for(self, num: str, declared: dict[str, Any]) -> dict[str, Any]:
        """What notebook ``num`` gets: ``params`` then its own section, restricted to what it declares."""
        wanted = {**self.params, **self.notebooks.get(num, {})}
        return {k: v for k, v in wanted.items() if k in declared}


def _check_fields(raw: dict[str, Any], where: str) -> None:
    """Every top-level key of a config is one of :data:`FIELDS` (a misspelt one answers "did you mean")."""
    try:
        check_known_fields(RunSettings, [str(k) for k in raw], where, allowed=FIELDS)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _notebook_numbers(run: Any, where: str) -> list[str]:
    """``run:`` as sorted two-digit notebook numbers (YAML may give ``01`` as an int, ``"01"`` as text)."""
    items = run if isinstance(run, (list, tuple)) else None
    if not items or not all((isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 99)
                            or (isinstance(x, str) and re.fullmatch(r"\d{1,2}", x.strip())) for x in items):
        raise ConfigError(f"{where}: 'run' must be a non-empty list of notebook numbers, e.g. "
                          f"run: [\"01\", \"02\", \"03\"], or left out to run every notebook; got {run!r}")
    return sorted({f"{int(x):02d}" for x in items})


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.exists():
        hint = (f" (named by 'extends' in {chain[-1]}; the path is relative to that file)" if chain
                else "; the shipped ones are in configs/ (tiny.yaml, default.yaml, paper_*.yaml)")
        raise ConfigError(f"config file {path} not found{hint}")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join(map(str, chain))}); "
                          "remove one of the 'extends' lines")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}. Fix the line named above.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at top level ({', '.join(FIELDS)}), "
                          f"got {type(raw).__name__}")
    _check_fields(raw, str(path))
    base_name = raw.get("extends")
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, e.g. extends: paper_base.yaml")
    base = _read_yaml(path.parent / base_name, chain + (path,))
    base.pop("name", None)  # a base's name never names the run
    return _deep_merge(base, raw)


def load_settings(path: str | os.PathLike, sets: list[str] | None = None) -> RunSettings:
    """Read ``path`` (following ``extends``), apply ``--set`` overrides, and validate the structure."""
    path = Path(path)
    raw = _read_yaml(path)
    raw.setdefault("name", path.stem)
    raw = apply_sets(raw, sets or [])
    return RunSettings.from_dict(raw, str(path))


# ---- command-line overrides ------------------------------------------------------------------------
def parse_set(item: str) -> tuple[str | None, str, Any]:
    """``KEY=VALUE`` or ``NN.KEY=VALUE`` -> ``(notebook or None, KEY, YAML-parsed value)``."""
    m = re.fullmatch(r"(?:(\d{1,2})\.)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", item.strip(), flags=re.S)
    if not m:
        raise ConfigError(f"--set {item.split('=')[0]!r}: expected KEY=VALUE or NN.KEY=VALUE, "
                          "e.g. --set EPOCHS=3 or --set 03.EPOCHS=3")
    num, key, text = m.groups()
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: the value is not valid YAML; quote it or write a list as [a, b]") from None
    return (f"{int(num):02d}" if num else None), key, value


def apply_sets(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``--set`` items to a raw config mapping (top-level fields too, e.g. ``timeout_per_cell=60``)."""
    raw = copy.deepcopy(raw)
    for item in sets:
        num, key, value = parse_set(item)
        if num:
            old = raw.get("notebooks") if isinstance(raw.get("notebooks"), dict) else {}
            nbs = {f"{int(k):02d}" if str(k).isdigit() else k: v for k, v in old.items()}
            nbs.setdefault(num, {})[key] = value
            raw["notebooks"] = nbs
        elif key in FIELDS and key not in ("params", "notebooks", "extends"):
            raw[key] = value
        else:
            if not isinstance(raw.get("params"), dict):
                raw["params"] = {}
            raw["params"][key] = value
    return raw


def normalise_only(only: list[str] | None, existing: list[str]) -> list[str] | None:
    """``--only`` values as two-digit notebook numbers, checked against ``existing``."""
    if not only:
        return None
    out = []
    for x in only:
        if not str(x).strip().isdigit():
            raise ConfigError(f"--only {x!r}: expected notebook numbers, e.g. --only 04 05; the notebooks are "
                              f"{', '.join(existing)}")
        out.append(f"{int(x):02d}")
    missing = sorted(set(out) - set(existing))
    if missing:
        raise ConfigError(f"--only names notebooks that do not exist: {missing}; the notebooks are "
                          f"{', '.join(existing)}")
    return out
