import pytest

from kstory.config import Config
from kstory.config import apply_overrides
from kstory.config import config_from_dict
from kstory.config import config_to_dict
from kstory.config import load_config
from kstory.data.data_config import DataConfig


def test_overrides_parse_types():
    config = apply_overrides(
        Config(),
        [
            "data.batch_size=4",
            "data.validate_images=false",
            "data.validation_fraction=0.2",
            "data.tokenizer=some/folder",
            "data.path=none",
            'model.image_encoder_options={"alpha": 0.75}',
            "seed=3",
        ],
    )
    assert config.model.image_encoder_options == {"alpha": 0.75}
    assert config.data.batch_size == 4 and config.data.validate_images is False
    assert config.data.validation_fraction == 0.2 and config.data.tokenizer == "some/folder"
    assert config.data.path is None and config.seed == 3
    assert Config().data.batch_size == 16  # the original is untouched


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown config key 'data.batch'.*data.batch_size"):
        apply_overrides(Config(), ["data.batch=4"])


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("data.batch_size=four", "data.batch_size takes an int"),
        ("data.validate_images=maybe", "data.validate_images takes true or false"),
        ("data.window_mode=middle", "data.window_mode must be one of \\('all', 'first'\\)"),
        ("data.source=coco", "data.source must be one of"),
        ("data.batch_size=0", "data.batch_size must be positive"),
        ("data.batch_size", "key=value"),
        ("model.image_encoder_options=alpha", "model.image_encoder_options takes a JSON object"),
        ("model.image_encoder_options=[1]", "model.image_encoder_options takes a JSON object"),
        ("model.decoder_refinement_filters=0", "model.decoder_refinement_filters must be positive"),
    ],
)
def test_bad_values_name_the_key(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Config(), [assignment])


def test_a_workdir_config_with_keys_nothing_read_still_loads():
    # data.cache and data.shuffle_buffer were written by earlier versions.
    values = config_to_dict(Config())
    values["data"].update(cache=False, shuffle_buffer=1024)
    assert config_from_dict(values) == Config()
    values["data"]["cache_size"] = 3
    with pytest.raises(ValueError, match="Unknown config key.*data.cache_size"):
        config_from_dict(values)


def test_real_sources_need_a_path():
    with pytest.raises(ValueError, match="data.path is required"):
        DataConfig(source="story_reasoning")
    with pytest.raises(ValueError, match="data.image_dir is required"):
        DataConfig(source="vist", path="vist/")


def test_tiny_config_and_its_smoke_switch(repo_root):
    full = load_config(f"{repo_root}/configs/tiny.py")
    smoke = load_config(f"{repo_root}/configs/tiny.py", smoke=True)
    assert full.data.source == "embedded"
    assert smoke.data.num_stories < full.data.num_stories
    assert smoke.data.image_size < full.data.image_size


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="No config file"):
        load_config(str(tmp_path / "nope.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(str(tmp_path / "empty.py"))


def test_values_valid_only_together_may_come_in_any_order():
    for assignments in (
        ["data.source=story_reasoning", "data.path=/data/sr"],
        ["data.path=/data/sr", "data.source=story_reasoning"],
    ):
        config = apply_overrides(Config(), assignments)
        assert (config.data.source, config.data.path) == ("story_reasoning", "/data/sr")
    with pytest.raises(ValueError, match="data.path is required"):
        apply_overrides(Config(), ["data.source=story_reasoning", "data.batch_size=4"])
