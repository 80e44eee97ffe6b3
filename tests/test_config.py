from dataclasses import dataclass, field

import pytest

from clews_pipe.config import load_config
from clews_pipe.errors import ClewsError


@dataclass
class Inner:
    workers: int = 2
    name: str = "x"


@dataclass
class Schema:
    inner: Inner = field(default_factory=Inner)
    lr: float = 1e-3


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  workers: 4\nlr: 0.5\n")
    conf = load_config(Schema, p, ["inner.name=abc"])
    assert conf.inner.workers == 4 and conf.inner.name == "abc" and conf.lr == 0.5


@pytest.mark.parametrize(
    "yaml_text, overrides, needle",
    [
        ("inner:\n  wrokers: 4\n", [], "inner.wrokers"),
        ("", ["inner.workers=many"], "inner.workers"),
        ("", ["nosuchkey=1"], "nosuchkey"),
        ("", ["justakey"], "justakey"),
    ],
)
def test_bad_config_is_one_line(tmp_path, yaml_text, overrides, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ClewsError) as err:
        load_config(Schema, p, overrides)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ClewsError, match="not found"):
        load_config(Schema, tmp_path / "nope.yaml")
