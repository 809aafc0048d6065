"""The real CLI, in process through typer's CliRunner: the verbs end to end and every bad input."""

import json

import pytest
from helpers import assert_clean_error, cli, tiny_sections, write_config


@pytest.mark.slow
@pytest.mark.slow
def test_prepare_fit_eval_generate_end_to_end(tmp_path, tiny_config):
    r = cli("prepare", tiny_config, "-q")
    assert r.exit_code == 0, r.output
    assert "vocabulary 34" in r.output
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert sum(meta["unigram_counts"]) == meta["splits"]["train"]["tokens"]
    assert {"tokens", "characters", "bytes", "words"} <= set(meta["splits"]["valid"])

    again = cli("prepare", tiny_config, "-q")
    assert again.exit_code == 0 and "nothing to do" in again.output

    r = cli("fit", tiny_config, "-q")
    assert r.exit_code == 0, r.output
    assert "step 12" in r.output and "valid perplexity" in r.output
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "tokenizer.model", "meta.json", "checkpoints/latest"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "logs").iterdir()), "TensorBoard logs written"
    loss = float(r.output.split("sampled loss ")[1].split(",")[0])
    assert loss > 0  # the real training loss, not a placeholder 0

    r = cli("eval", tiny_config, "--json", "--split", "valid")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output.strip().splitlines()[-1])
    for key in ("perplexity", "loss", "tokens", "bits_per_byte", "word_perplexity", "split", "step"):
        assert key in metrics
    assert metrics["split"] == "valid" and metrics["step"] == 12
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-6)
    assert 1 < metrics["perplexity"] < 34  # better than uniform over 34 ids after 12 steps

    text = cli("eval", tiny_config)
    assert text.exit_code == 0 and "test @ step 12: perplexity" in text.output

    g1 = cli("generate", tiny_config, "--prompt", "the king", "--max-tokens", "12", "--seed", "3")
    g2 = cli("generate", tiny_config, "--prompt", "the king", "--max-tokens", "12", "--seed", "3")
    assert g1.exit_code == 0, g1.output
    assert g1.output == g2.output and g1.output.startswith("the king")
    greedy = cli("generate", tiny_config, "--temperature", "0", "--max-tokens", "5")
    assert greedy.exit_code == 0, greedy.output

    # a second fit with the same config continues from the checkpoint instead of restarting
    more = cli("fit", tiny_config, "-q", "--set", "train.max_steps=14")
    assert more.exit_code == 0, more.output
    assert "resuming from" in more.output and "step 14" in more.output


@pytest.mark.slow
def test_python_m_entry_point_has_help():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "lmtrain", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "prepare" in out.stdout and "generate" in out.stdout


@pytest.mark.slow
def test_unknown_key_suggests_the_closest(tmp_path, corpus):
    sections = tiny_sections(tmp_path, corpus)
    sections["train"]["batchsize"] = 3
    cfg = write_config(tmp_path / "c.yaml", sections)
    assert_clean_error(cli("prepare", cfg), 2, "train.batchsize", "did you mean train.batch_size?")


@pytest.mark.slow
def test_wrong_type_and_range(tiny_config):
    assert_clean_error(cli("fit", tiny_config, "--set", "train.batch_size=many"), 2, "train.batch_size", "'many'")
    assert_clean_error(cli("fit", tiny_config, "--set", "model.dropout=2"), 2, "model.dropout", "2")


@pytest.mark.slow
def test_set_on_missing_key(tiny_config):
    assert_clean_error(cli("prepare", tiny_config, "--set", "model.layers=2"), 2, "model.layers",
                       "did you mean model.num_layers?")


@pytest.mark.slow
def test_missing_corpus_path(tmp_path, tiny_config):
    missing = tmp_path / "nowhere"
    result = cli("prepare", tiny_config, "--set", f"data.corpus={missing}")
    assert_clean_error(result, 1, str(missing), "does not exist")


@pytest.mark.slow
def test_empty_corpus(tmp_path, tiny_config):
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(5):
        (empty / f"{i}.txt").write_text("")
    r = cli("prepare", tiny_config, "-q", "--set", f"data.corpus={empty}")
    assert_clean_error(r, 1, "data.corpus", "no text")
    assert not (tmp_path / "data").exists()  # nothing half-written left behind


@pytest.mark.slow
def test_corpus_too_small_for_the_vocabulary(tiny_config):
    r = cli("prepare", tiny_config, "-q", "--set", "tokenizer.vocab_size=500", "--set", "tokenizer.model_type=unigram")
    assert_clean_error(r, 1, "tokenizer.vocab_size", "500", "too large")


@pytest.mark.slow
def test_fit_before_prepare(tiny_config):
    assert_clean_error(cli("fit", tiny_config, "-q"), 1, "no prepared data", "lmtrain prepare")


@pytest.mark.slow
def test_eval_and_generate_before_fit(tiny_config):
    assert cli("prepare", tiny_config, "-q").exit_code == 0
    assert_clean_error(cli("eval", tiny_config), 1, "no trained run", "lmtrain fit")
    assert_clean_error(cli("generate", tiny_config), 1, "no trained run", "lmtrain fit")


@pytest.mark.slow
def test_prepare_refuses_a_different_config_without_force(tmp_path, tiny_config):
    assert cli("prepare", tiny_config, "-q").exit_code == 0
    meta_before = (tmp_path / "data" / "meta.json").read_text()
    r = cli("prepare", tiny_config, "-q", "--set", "tokenizer.vocab_size=30")
    assert_clean_error(r, 1, "data.dir", "--force")
    assert (tmp_path / "data" / "meta.json").read_text() == meta_before
    forced = cli("prepare", tiny_config, "-q", "--force", "--set", "tokenizer.vocab_size=30")
    assert forced.exit_code == 0 and "vocabulary 30" in forced.output


def test_bad_sampling_options(tiny_config):
    assert_clean_error(cli("generate", tiny_config, "--top-p", "0"), 1, "--top-p")
    assert_clean_error(cli("generate", tiny_config, "--max-tokens", "0"), 1, "--max-tokens")


@pytest.mark.slow
def test_config_that_is_not_a_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("just a string\n")
    assert_clean_error(cli("fit", cfg), 2, str(cfg), "mapping")


@pytest.mark.slow
def test_eval_batch_size_changes_nothing_but_the_batching(tmp_path, tiny_config):
    assert cli("prepare", str(tiny_config), "-q").exit_code == 0
    assert cli("fit", str(tiny_config), "-q").exit_code == 0
    results = []
    for extra in ([], ["--batch-size", "1"], ["--batch-size", "64"]):
        r = cli("eval", str(tiny_config), "--split", "valid", "--json", *extra)
        assert r.exit_code == 0, r.output
        results.append(json.loads(r.output.strip().splitlines()[-1]))
    for other in results[1:]:
        assert other["tokens"] == results[0]["tokens"]
        assert abs(other["loss"] - results[0]["loss"]) < 1e-5
    assert all(r["seconds"] > 0 for r in results)
    bad = cli("eval", str(tiny_config), "--batch-size", "0")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
