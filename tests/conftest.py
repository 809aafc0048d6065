"""The tests' fixtures: a tiny corpus and a tiny config in each test's tmp_path (the helpers
they are made with are in helpers.py), and the `slow` marker, put on every test that prepares,
fits or runs a benchmark (`make test-fast` leaves them out)."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
from helpers import cli, tiny_sections, write_config, write_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def tiny_config(tmp_path: Path, corpus: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_sections(tmp_path, corpus))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny two-layer model, prepared and trained once for the tests that only read it
    (test_api, test_evaluate, test_export)."""
    root = tmp_path_factory.mktemp("api")
    corpus = write_corpus(root / "corpus")
    cfg = write_config(root / "c.yaml", tiny_sections(root, corpus, model={"num_layers": 2}))
    for verb in ("prepare", "fit"):
        r = cli(verb, str(cfg), "-q")
        assert r.exit_code == 0, r.output
    import lmtrain

    return {"config": cfg, "root": root, "lm": lmtrain.load(root / "run")}


# What makes a test slow: preparing or fitting (through the CLI, the functions or a fixture that
# does), or running a benchmark script.
_SLOW_CODE = re.compile(r"""["'](prepare|fit)["']|\b(prepare|fit|fit_run)\(|BENCH|benchmarks/|_bench\.py""")
_SLOW_FIXTURES = {"trained", "shared"}


def _slow(function, seen: set[int] | None = None) -> bool:
    """The test function, or a function of its module it calls (one level down), prepares or fits."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False
    if _SLOW_CODE.search(source):
        return True
    seen = seen if seen is not None else {id(function)}
    module = inspect.getmodule(function)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            helper = getattr(module, node.func.id, None)
            if inspect.isfunction(helper) and helper.__module__ == module.__name__ and id(helper) not in seen:
                seen.add(id(helper))
                if _slow(helper, seen):
                    return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if "slow" in item.keywords or function is None:
            continue
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or _slow(function):
            item.add_marker(pytest.mark.slow)
