"""Imports run one way (docs/architecture.md): import-linter's contracts in pyproject.toml hold, every
module of ``trt`` has a layer, and a circle or an upward import in a copy of the package breaks them,
with the import chain named."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package ``trt`` found in ``root``, with ``root``'s pyproject.toml."""
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
               "--no-cache", "--no-logo", str(root / "pyproject.toml")]
    return subprocess.run(command, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True,
                          text=True, timeout=120)


def layer_modules() -> list[str]:
    """Every module named in a layer of the layers contract (optional ones without their parentheses)."""
    contracts = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    return [name.strip().strip("()") for layer in layers for name in layer.replace(":", "|").split("|")]


def test_imports_run_one_way():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_module_has_a_layer():
    """A module outside every layer would escape the layers contract: name its place when adding it."""
    layered = layer_modules()
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for path in (ROOT / "trt").rglob("*.py")}
    # A package whose modules sit in different layers (trt, trt.features) is itself in none.
    parents = {name.rsplit(".", i)[0] for name in layered for i in range(1, name.count(".") + 1)}
    unplaced = sorted(m for m in modules - parents if not any(m == l or m.startswith(l + ".") for l in layered))
    assert not unplaced, f"modules in no layer of pyproject.toml's layers contract: {unplaced}"


@pytest.mark.parametrize("module, code, broken, chain", [
    ("trt/runtime/upward.py", "import trt.jobs.job\n", "trt.runtime is not allowed to import trt.jobs",
     "trt.runtime.upward -> trt.jobs.job"),
    ("trt/features/sift.py", "\nfrom trt.runtime.matcher import Matcher\n", "trt.features.sift is not allowed to import trt.runtime",
     "trt.features.sift -> trt.runtime.matcher"),
    ("trt/jobs/pairs.py", "\ndef _later():\n    from trt.jobs import job\n", "No cycles are allowed in trt.jobs",
     ".pairs -> .job"),
    ("trt/runtime/base.py", "\nimport torch\n", "trt.runtime is not allowed to import torch", "trt.runtime.base -> torch"),
])
def test_a_wrong_import_breaks_a_contract_naming_the_chain(tmp_path, module, code, broken, chain):
    """The contracts catch what they are for: an upward import (lazy ones too), a circle, torch on the serving side."""
    shutil.copytree(ROOT / "trt", tmp_path / "trt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a") as file:
        file.write(code)
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert broken in done.stdout and chain in done.stdout, done.stdout
