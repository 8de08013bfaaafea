"""The GPU environment (environment.yml) resolves to what the package itself requires."""
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pip_pins() -> dict[str, Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {Requirement(r).name: Requirement(r) for r in pip if not r.startswith("-")}


def _project_requirements() -> dict[str, Requirement]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def test_gpu_environment_pins_satisfy_the_package_and_transformers_5():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert "pytorch" not in env["channels"], "the pytorch conda channel stops at torch 2.5.1"
    assert not any(isinstance(d, str) and d.split("=")[0] in ("pytorch", "pytorch-cuda") for d in env["dependencies"])
    pins, project = _pip_pins(), _project_requirements()
    assert "torch" in pins, "torch must come from pip (PyPI's Linux wheels carry CUDA)"
    for name, pin in pins.items():
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        assert exact, f"{name} is not pinned in environment.yml ({pin})"
        if name in project:
            assert project[name].specifier.contains(exact[0]), f"{name}=={exact[0]} breaks pyproject's {project[name]}"
    assert Version([s.version for s in pins["torch"].specifier][0]) >= Version("2.6")
    assert project["torch"].specifier == SpecifierSet(">=2.6"), "pyproject admits a torch that transformers 5 disables"
    assert any(r.startswith("-e .") for r in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))
