from pathlib import Path

import pytest

from lmtrain.config import Config, config_from_dict, load_config
from lmtrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_demo_config():
    assert load_config(REPO / "configs" / "demo.yaml") == Config()
    assert Config().tokenizer.vocab_size == 8000 and Config().model.hidden_dim == 512


def test_overrides_are_yaml_typed(tmp_path):
    cfg = load_config(None, ["train.batch_size=7", "model.dropout=0.5", "data.corpus=[a.txt, b.txt]",
                             "train.max_steps=null"])
    assert cfg.train.batch_size == 7 and cfg.model.dropout == 0.5
    assert cfg.data.corpus == ("a.txt", "b.txt") and cfg.train.max_steps is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"batch_sise": 3}}, "train.batch_sise (did you mean train.batch_size?)"),
        ({"trian": {}}, "'trian' (did you mean train?)"),
        ({"train": {"batch_size": "big"}}, "train.batch_size: expected an integer, got 'big'"),
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1, got 0"),
        ({"model": {"dropout": 1.5}}, "model.dropout: must be between"),
        ({"model": {"softmax": "sampeld"}}, "model.softmax: must be one of sampled | full, got 'sampeld' (did you mean 'sampled'?)"),
        ({"tokenizer": {"model_type": "wordpiece"}}, "tokenizer.model_type: must be one of"),
        ({"tokenizer": {"vocab_size": 100}, "model": {"num_sampled": 100}}, "model.num_sampled: must be smaller"),
        ({"data": {"corpus": 3}}, "data.corpus: expected a string or a list of strings"),
        ({"train": 5}, "train: expected a mapping"),
    ],
)
def test_bad_values_name_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "--set train.nope: unknown key 'nope' in section 'train'"),
        ("train.batchsize=1", "did you mean train.batch_size?"),
        ("trainer.batch_size=1", "unknown section 'trainer' (did you mean train?)"),
        ("batch_size", "expected section.key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_yaml_files_are_loaded_safely(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_fingerprint_ignores_where_data_goes():
    a = load_config(None, ["data.dir=x"])
    b = load_config(None, ["data.dir=y"])
    c = load_config(None, ["tokenizer.vocab_size=4000"])
    assert a.data_fingerprint() == b.data_fingerprint() != c.data_fingerprint()
