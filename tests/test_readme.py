"""The README as a newcomer uses it: every `lmtrain` command in it runs as written (on a tiny
corpus in place of the demo's), its links lead somewhere, and it stays short enough to read.
(The Keras snippet is run by test_keras.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import WORDS, cli, tiny_sections, write_config

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `lmtrain ...` commands of the README's bash blocks, in order, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                if part.strip().startswith("lmtrain "):
                    commands.append(part.strip())
    return commands


@pytest.mark.slow
def test_the_readme_names_its_commands():
    verbs = [shlex.split(c)[1] for c in readme_commands()]
    assert {"prepare", "fit", "eval", "generate", "export"} <= set(verbs)


@pytest.mark.slow
@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, corpus, monkeypatch):
    """Each command, with the demo's (or the user's) config swapped for a tiny one and the user's
    files for tiny ones; distributed training is left to test_distribute.py (it needs several
    devices or machines)."""
    monkeypatch.chdir(tmp_path)  # what the commands write by relative path lands here
    config = write_config(tmp_path / "tiny.yaml", tiny_sections(tmp_path, corpus))
    (tmp_path / "sonnet.txt").write_text(" ".join(WORDS[:12]) + "\n" + " ".join(WORDS[12:24]) + "\n")
    swap = {"configs/demo.yaml": str(config), "mine.yaml": str(config)}
    ran = []
    for command in readme_commands():
        if "train.distribute=" in command:
            continue
        args = [swap.get(a, a) for a in shlex.split(command)[1:]]
        result = cli(*args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        ran.append(args[0])
    assert ran.count("fit") >= 2 and "export" in ran  # the blocks were read, and the run resumed
    assert (tmp_path / "scores.jsonl").is_file() and (tmp_path / "serving" / "lm" / "saved_model.pb").is_file()


def test_the_readme_links_lead_somewhere_and_it_stays_short():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (README.parent / target).exists(), target
    assert len(text.splitlines()) <= 350
