from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs import config as config_lib
from jobs.config import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


@dataclass
class Inner:
    size: int = 3
    scales: tuple[float, ...] = (0.1, 0.2)
    mode: str = "a"


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    ratio: float = 0.5
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: y\ninner:\n  size: 7\n")
    cfg = config_lib.load(Outer, f, ["inner.scales=[1, 2.5]", "flag=true", "ratio=2"])
    assert cfg == Outer(name="y", flag=True, ratio=2.0, inner=Inner(size=7, scales=(1.0, 2.5)))


def test_unknown_keys_are_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  sise: 7\n")
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        config_lib.load(Outer, f)
    with pytest.raises(ConfigError, match=r"inner\.nope"):
        config_lib.load(Outer, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        config_lib.load(Outer, None, ["inner.size=big"])
    with pytest.raises(ConfigError, match="not a section"):
        config_lib.load(Outer, None, ["name.x=1"])


def test_cli_exits_2_on_bad_key(capsys):
    with pytest.raises(SystemExit) as e:
        config_lib.cli(Outer, ["bogus=1"], "test")
    assert e.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_digest_is_stable_and_sensitive():
    a, b = Outer(), Outer()
    assert config_lib.digest(a) == config_lib.digest(b)
    b.inner.size = 4
    assert config_lib.digest(a) != config_lib.digest(b)
    assert config_lib.flatten(config_lib.to_dict(a))["inner.size"] == 3


@dataclass
class InnerLater(Inner):
    """Inner after a release added a switch whose default is the old behaviour."""
    sharp: bool = config_lib.later(False)


@dataclass
class OuterLater(Outer):
    inner: InnerLater = field(default_factory=InnerLater)


def test_a_field_added_later_leaves_digests_alone_at_its_default():
    # Stored digests (journals, dataset and protocol digests) were taken before `sharp` existed.
    old = config_lib.digest(Outer())
    assert config_lib.digest(OuterLater()) == old
    assert config_lib.digest([OuterLater(), "x"]) == config_lib.digest([Outer(), "x"])  # nested in lists too
    assert config_lib.content({"a": OuterLater()}) == {"a": config_lib.to_dict(Outer())}
    changed = OuterLater(inner=InnerLater(sharp=True))
    assert config_lib.digest(changed) != old
    # Everything else still sees the field (params, saved configs).
    assert config_lib.flatten(config_lib.to_dict(OuterLater()))["inner.sharp"] is False
    assert config_lib.load(OuterLater, None, ["inner.sharp=true"]) == changed


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    from jobs.ablate import AblateConfig, check_config
    from jobs.evaluate import EvaluateConfig
    from jobs.train_config import TrainConfig
    from jobs.build_dataset import DatasetJobConfig

    # Each shipped config names its job in its first line: "# job: <module>".
    job = path.read_text().splitlines()[0].removeprefix("# job:").strip()
    cls = {"build_dataset": DatasetJobConfig, "train": TrainConfig, "evaluate": EvaluateConfig, "ablate": AblateConfig}[job]
    cfg = config_lib.load(cls, path)
    assert config_lib.from_dict(cls, config_lib.to_dict(cfg)) == cfg
    if cls is AblateConfig:
        check_config(cfg)  # no key the ablation derives itself


def test_there_are_shipped_configs():
    assert {p.name for p in CONFIGS} >= {"default.yaml", "demo.yaml", "train.yaml", "train_demo.yaml"}


def test_run_job_shows_a_traceback_only_for_errors_raised_inside_libraries(capsys):
    """A bad value the job itself rejects: one line. A ValueError from deep inside numpy is a bug:
    it gets its traceback. Both exit 1."""
    import numpy as np

    @dataclass
    class Cfg:
        what: str = "ours"

    def main(cfg):
        if cfg.what == "ours":
            raise ValueError("output.path must be a folder")
        np.zeros(3).reshape(2, 2)

    with pytest.raises(SystemExit) as ours:
        config_lib.run_job(main, Cfg, "doc", ["what=ours"])
    err = capsys.readouterr().err
    assert ours.value.code == 1 and "error: output.path must be a folder" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as theirs:
        config_lib.run_job(main, Cfg, "doc", ["what=numpy"])
    err = capsys.readouterr().err
    assert theirs.value.code == 1 and "Traceback" in err and "reshape" in err


def test_help_shows_each_documented_key_with_its_comment(capsys):
    from jobs.build_dataset import DatasetJobConfig

    with pytest.raises(SystemExit):
        config_lib.cli(DatasetJobConfig, ["--help"], "build")
    text = capsys.readouterr().out
    for key in config_lib.flatten(config_lib.to_dict(DatasetJobConfig())):
        assert f"  {key} = " in text
    # a comment at the end of the field's line, and a block of comment lines above a field
    assert "output.overwrite = False\n      allow reusing an output folder built with a different config" in text
    notes = config_lib.key_comments(DatasetJobConfig)
    assert notes["watertight.min_component_ratio"].startswith("Keep the connected components whose area")
    assert "watertight.resolution" in notes and "seed" not in notes.get("source.kind", "")
