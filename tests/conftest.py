"""The tests' fixtures: a tiny corpus and a tiny config in each test's tmp_path (the helpers
they are made with are in helpers.py), a trained tiny run shared by the tests that only read it,
and the `slow` marker carried by the fixtures that prepare or fit (`make test-fast` leaves slow
tests out)."""

from __future__ import annotations

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


# Tests that prepare, fit or run a benchmark are marked `slow` where they are written (a
# decorator, or `pytestmark` for a whole module); these fixtures prepare and fit, so a test that
# takes one is slow too.
_SLOW_FIXTURES = {"trained", "shared"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
