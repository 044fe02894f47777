import re

import pytest
import yaml

from solution.config import ConfigError, load_config, save_config


def test_layers_defaults_yaml_then_overrides():
    cfg = load_config("toy", ["train.epochs=2", "model.layers=[-2,-1]", "run.name=x"])
    assert cfg["train"]["epochs"] == 2
    assert cfg["model"]["layers"] == [-2, -1]
    assert cfg["run"]["name"] == "x"
    assert cfg["infer"]["topk"] == 100  # untouched default


def test_run_name_defaults_to_yaml_stem():
    assert load_config("toy-tiny")["run"]["name"] == "toy-tiny"


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'.*'train\.epochs'"):
        load_config("toy", ["train.epoch=3"])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  backbnoe: resnet50\n")
    with pytest.raises(ConfigError, match=r"model\.backbnoe.*model\.backbone"):
        load_config(path)


def test_override_needs_equals_and_section_needs_mapping():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("toy", ["train.epochs"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config("toy", ["train=3"])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no-such-experiment")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("toy", ["train.lr=0.5"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg


def test_values_are_type_checked_and_scientific_floats_parse():
    cfg = load_config("toy", ["train.lr=3e-4", "train.margin=1"])
    assert cfg["train"]["lr"] == 3e-4 and isinstance(cfg["train"]["margin"], float)
    with pytest.raises(ConfigError, match="'train.epochs' .* expects a number like \\d+, got 'many'"):
        load_config("toy", ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expects a list"):
        load_config("toy", ["model.layers=3"])
    assert load_config("toy", ["model.pretrained_file=/x.pt"])["model"]["pretrained_file"] == "/x.pt"


def test_no_default_is_a_number_hiding_in_a_string():
    import re

    def walk(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    number = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    assert [k for k, v in walk(load_config(None)) if isinstance(v, str) and number.match(v)] == []


def test_search_storage_and_kl_mix_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="'infer.index.dtype' must be float16 or float32, got 'float8'"):
        load_config("toy", ["infer.index.dtype=float8"])
    with pytest.raises(ConfigError, match="'model.kl.uniform_mix' must be a number from 0 to 1, got 1.5"):
        load_config("toy", ["model.kl.uniform_mix=1.5"])
    assert load_config("toy", ["infer.index.spill_dir=/tmp/spill"])["infer"]["index"]["spill_dir"] == "/tmp/spill"


@pytest.mark.parametrize(("override", "key"), [
    ("infer.combine_p=.inf", "infer.combine_p"),
    ("train.lr=.inf", "train.lr"),
    ("infer.index.nprobe=0", "infer.index.nprobe"),
    ("infer.index.nlist=0", "infer.index.nlist"),
    ("infer.diffusion.alpha=2", "infer.diffusion.alpha"),
    ("infer.diffusion.iterations=0", "infer.diffusion.iterations"),
    ("model.regions.reference=[0,0]", "model.regions.reference"),
    ("model.regions.reference=[32]", "model.regions.reference"),
    ("model.regions.overlap=1", "model.regions.overlap"),
    ("model.kl.bins=1", "model.kl.bins"),
    ("infer.scales=[1,1]", "infer.scales"),
    ("infer.scales=[sqrt2,1.4142]", "infer.scales"),
])
def test_numeric_keys_out_of_range_are_refused(override, key):
    """#29: each of these was accepted; some gave NaN rankings or all-zero descriptors and a 'validated'
    submission."""
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        load_config("toy", [override])


def test_another_competition_gets_its_own_run_folder():
    assert load_config("toy", ["competition=mine"])["run"]["name"] == "toy-mine"
    assert load_config("toy", ["competition=toy"])["run"]["name"] == "toy"
    assert load_config("toy", ["competition=mine", "run.name=x"])["run"]["name"] == "x"


def test_every_numeric_key_has_a_range_rule():
    """#29: keys without a range (nprobe=0, diffusion.alpha=2, ...) were accepted and gave NaN rankings or
    silent clamps. Every number, list or null default in defaults.yaml has a rule; the docs show them all."""
    import yaml

    from solution.config import CONFIG_DIR, VALUE_RULES, _flat_items, range_table

    defaults = _flat_items(yaml.safe_load((CONFIG_DIR / "defaults.yaml").read_text()))
    ruled = {k for k, v in defaults.items()
             if v is None or isinstance(v, list) or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    assert sorted(ruled - set(VALUE_RULES)) == []
    table = range_table()
    assert all(f"| `{key}` |" in table for key in VALUE_RULES)
    assert "\\<" in table and re.search(r"(?<!\\)[<>]", table) is None  # escaped for markdown


@pytest.mark.parametrize("override", ["train.jitter=1.5", "train.blur_p=-0.1", "train.jpeg_p=2",
                                      "model.kl.smoothing=0", "infer.index.recall_sample=0",
                                      "infer.label_rerank.min_confidence=-1", "model.pretrained_file=''"])
def test_the_last_unranged_keys_are_ranged(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config("toy", [override])
