"""How the code is put together, checked: no import cycle, no function or class past the sizes
the house keeps, loading a trained run without the trainer, and `lmtrain.keras` without
TensorFlow until a name of it is used."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 85, 250


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The lmtrain modules a file imports anywhere in it (function bodies and type-checking
    blocks too): `from package import module` names the module, not the package."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmtrain"):
            submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            deps.update(submodules)
            if len(submodules) < len(node.names):
                deps.add(node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("lmtrain"))
    return {d for d in deps if d in modules}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for dep in graph[name]:
            if dep in trail:
                cycles.append(trail[trail.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, trail + [dep])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, " | ".join(" -> ".join(c) for c in cycles)


# The stages, lowest first: a module imports only modules of its own stage or a lower one, and
# the two last stages (training and using a trained run) import nothing of each other.
STAGES = {
    "shared": ("lmtrain.errors", "lmtrain.paths", "lmtrain.progress", "lmtrain.signals", "lmtrain.lock",
               "lmtrain.bundle", "lmtrain.keras"),
    "config": ("lmtrain.config",),
    "data": ("lmtrain.data",),
    "model": ("lmtrain.model", "lmtrain.build", "lmtrain.rundir", "lmtrain.checkpoints", "lmtrain.scoring"),
    "fit": ("lmtrain.fit",),
    "use": ("lmtrain.use",),
    "cli": ("lmtrain.cli", "lmtrain.__main__", "lmtrain"),
}
RANK = {"shared": 0, "config": 1, "data": 2, "model": 3, "fit": 4, "use": 4, "cli": 5}


def _stage(module: str) -> str:
    matches = [(len(prefix), stage) for stage, prefixes in STAGES.items() for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no stage of STAGES: add it (and to docs/layout.md)"
    return max(matches)[1]


def test_imports_run_one_way_from_config_to_data_to_the_model_to_fit_and_use():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        mine = _stage(name)
        for dep in _imports(path, modules) - {name}:
            theirs = _stage(dep)
            sideways = {mine, theirs} == {"fit", "use"}
            library = name.startswith("lmtrain.keras") and not dep.startswith("lmtrain.keras")
            if RANK[theirs] > RANK[mine] or sideways or library:
                upward.append(f"{name} ({mine}) imports {dep} ({theirs})")
    assert not upward, upward


def test_the_top_level_holds_only_what_the_stages_share():
    top = sorted(p.name for p in (SRC / "lmtrain").glob("*.py"))
    assert len(top) <= 14, top
    folders = sorted(p.name for p in (SRC / "lmtrain").iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == ["config", "data", "fit", "keras", "use"]


def test_the_model_reads_nothing_of_training():
    """The model owns its layers, forward pass, scoring and decoding; the training step takes the
    model as an argument (lmtrain.fit.step), so the model module imports nothing of it."""
    modules = _modules()
    deps = _imports(modules["lmtrain.model"], modules)
    assert not [d for d in deps if d.startswith(("lmtrain.fit", "lmtrain.build", "lmtrain.use"))], deps
    tree = ast.parse(modules["lmtrain.model"].read_text())
    bases = [ast.unparse(b) for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "LanguageModel"
             for b in n.bases]
    assert bases == ["keras.Model"]


def test_no_function_or_class_past_the_house_sizes():
    too_long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    too_long.append(f"{name}.{node.name}: {lines} lines (at most {limit})")
    assert not too_long, too_long


def _run(code: str, cwd: Path | None = None) -> str:
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                           timeout=300, cwd=cwd)
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout.strip().splitlines()[-1]


def test_loading_a_run_imports_no_trainer(trained):
    out = _run(f"""
        import sys
        import lmtrain
        lm = lmtrain.load({str(trained["root"] / "run")!r})
        lm.perplexity("the king")
        print(sorted(m for m in sys.modules if m.startswith("lmtrain.fit") or m == "lmtrain.data.prepare"))
    """)
    assert out == "[]"


def test_the_library_loads_tensorflow_only_when_a_name_is_used():
    out = _run("""
        import sys
        import lmtrain.keras
        import lmtrain.keras.negatives
        before = "tensorflow" in sys.modules
        from lmtrain.keras import SampledSoftmax
        print(before, "tensorflow" in sys.modules, SampledSoftmax.__module__)
    """)
    assert out == "False True lmtrain.keras.layers"


@pytest.mark.slow
def test_a_saved_model_loads_with_the_library_imported_after_keras(tmp_path):
    """`keras.models.load_model` finds the library's registered classes when `lmtrain.keras` is
    imported (after Keras), with no name of it used."""
    _run(f"""
        import keras, numpy as np
        from lmtrain.keras import LSTM, SampledSoftmax
        head = SampledSoftmax(40, num_sampled=8, seed=1)
        model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(40, 8),
                                  LSTM(8, return_sequences=True), head])
        model.compile(optimizer="adam", loss=head.loss)
        model.fit(np.ones((4, 5), np.int32), np.ones((4, 5), np.int32), verbose=0)
        model.save({str(tmp_path / "m.keras")!r})
        print("saved")
    """)
    out = _run(f"""
        import keras
        import lmtrain.keras
        model = keras.models.load_model({str(tmp_path / "m.keras")!r})
        print(type(model.layers[-1]).__name__, model.predict(__import__("numpy").ones((1, 3), "int32"),
                                                               verbose=0).shape)
    """)
    assert out == "SampledSoftmax (1, 3, 40)"


@pytest.mark.slow
def test_prepare_with_a_sampled_softmax_needs_no_tensorflow(tmp_path, tiny_config):
    out = _run(f"""
        import sys
        from lmtrain.config.files import load_config
        from lmtrain.data.prepare import prepare
        prepare(load_config({str(tiny_config)!r}, ["model.softmax=sampled"]), progress=False)
        print("tensorflow" in sys.modules)
    """)
    assert out == "False"
    assert cli("prepare", str(tiny_config), "-q").exit_code == 0  # prepared: the same config does nothing
