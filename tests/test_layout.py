"""The house's layout rules, checked: every script is one hop from its stage module, no stage imports another
stage, the library imports no stage, and importing the library has no side effects (no matplotlib backend, no
change to torch's global random state, no change to the process's umask)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from stresstest.core import atomic
from stresstest.nn.backbones import load_backbone

PACKAGE = REPO / "stresstest"
STAGES = PACKAGE / "stages"
SCRIPTS = sorted([*REPO.glob("*.py"), *(REPO / "probing").glob("*.py")])


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the stresstest modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("stresstest")}


def stage_name(path: Path) -> str:
    return ".".join(path.relative_to(STAGES).with_suffix("").parts)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_script_is_one_hop_from_the_stage_named_as_it(script):
    module = ".".join(script.relative_to(REPO).with_suffix("").parts)
    assert imported_modules(script) == {f"stresstest.stages.{module}", f"stresstest.stages.{module}.main"}
    assert (STAGES / script.relative_to(REPO)).is_file()


def test_no_stage_imports_another_and_the_library_imports_no_stage():
    for path in PACKAGE.rglob("*.py"):
        stages_imported = {name for name in imported_modules(path) if name.startswith("stresstest.stages.")}
        stages_imported = {name for name in stages_imported
                           if (STAGES / Path(*name.split(".")[2:])).with_suffix(".py").is_file()}
        if path.parent.is_relative_to(STAGES) and path.name != "__init__.py":
            assert stages_imported <= {f"stresstest.stages.{stage_name(path)}"}, path
        else:
            assert not stages_imported, path


def test_no_module_forces_a_matplotlib_backend_or_uses_pyplot():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]
        assert not any(call.func.attr == "use" and getattr(call.func.value, "id", "") == "matplotlib"
                       for call in calls), path
        assert "matplotlib.pyplot" not in imported_names(tree), path


def imported_names(tree: ast.AST) -> set[str]:
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | \
        {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.slow  # a fresh interpreter that imports torch
def test_importing_the_library_chooses_no_matplotlib_backend():
    code = ("import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none(); "
            "import stresstest.plots, stresstest.stages.report, stresstest.stages.robustness; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "assert matplotlib.rcParams._get_backend_or_none() == before, 'backend changed'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_library_functions_leave_torch_global_random_state_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    load_backbone("efficientnet_lite0", "none", seed=7)  # a random-init model from its own seed
    assert torch.equal(torch.get_rng_state(), state)
    first = load_backbone("efficientnet_lite0", "none", seed=7)
    second = load_backbone("efficientnet_lite0", "none", seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_atomic_writes_give_the_usual_permissions_and_leave_the_umask_alone(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "file.txt", "x")
        assert os.umask(0o027) == 0o027  # unchanged by the write
    finally:
        os.umask(previous)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temporary left beside it


@pytest.mark.slow  # a fresh interpreter that imports every stage
def test_every_script_runs_from_the_root_without_the_package_installed(tmp_path):
    """`pip install -r requirements.txt` leaves stresstest uninstalled: `python probing/x.py` must still find it.
    The interpreter here has it installed in editable mode, so its finder is removed first; each script then runs
    with --help, sys.path starting as Python starts it for a script: with the script's own folder."""
    code = f"""
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in str(getattr(f, '__module__', ''))]
base = [p for p in sys.path if p not in ('', '.') and '__editable__' not in p]
for script in {[str(script) for script in SCRIPTS]!r}:
    sys.path[:] = [script.rsplit('/', 1)[0], *base]
    for name in [name for name in sys.modules if name.split('.')[0] in ('stresstest', 'models')]:
        del sys.modules[name]  # found afresh, as by a new interpreter
    sys.argv = [script, '--help']
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as done:
        assert done.code == 0, script
    print('ran', script)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("ran ") == len(SCRIPTS)
