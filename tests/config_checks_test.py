import dataclasses
from typing import Optional

import pytest

from kstory.config_checks import check_field_types
from kstory.config_checks import from_preset


@dataclasses.dataclass
class _Section:
    count: int = 1
    rate: float = 0.5
    name: str = "a"
    flag: bool = False
    path: Optional[str] = None
    options: dict = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"count": "1"}, "section.count must be an int; got '1' (str)"),
        ({"count": True}, "section.count must be an int; got True (bool)"),
        ({"count": 1.0}, "section.count must be an int; got 1.0 (float)"),
        ({"rate": "0.5"}, "section.rate must be a number"),
        ({"flag": 1}, "section.flag must be true or false; got 1 (int)"),
        ({"name": 3}, "section.name must be a string"),
        ({"path": 3}, "section.path must be a string"),
        ({"options": "alpha=1"}, "section.options must be a dict"),
    ],
)
def test_wrong_types_name_the_key(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_field_types(_Section(**values), "section")


def test_right_types_pass():
    check_field_types(
        _Section(count=2, rate=1, name="b", flag=True, path="x", options={"a": 1}), "section"
    )
    check_field_types(_Section(path=None), "section")


def test_preset_paths_and_loader_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"data.tokenizer '\./nope' is not a folder"):
        from_preset(lambda source: source, "data.tokenizer", "./nope")
    assert from_preset(lambda source: source, "data.tokenizer", str(tmp_path)) == str(tmp_path)

    def failing(source):
        raise ValueError("Unknown preset identifier.\nA preset must be one of ...")

    with pytest.raises(
        ValueError,
        match=r"model.text_encoder 'bert_x' could not be loaded: "
        r"Unknown preset identifier\.$",
    ):
        from_preset(failing, "model.text_encoder", "bert_x")
