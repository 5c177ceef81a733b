"""The workload catalog (configs/workloads/*.toml) and profile validation."""

import tomllib
from pathlib import Path

import pytest

from jpo.errors import ConfigError
from jpo.sim.response import (
    ClusterConditions,
    load_catalog,
    load_conditions,
    load_profile,
    predict,
)

WORKLOADS = Path(__file__).resolve().parents[2] / "configs" / "workloads"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workloads"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_catalog_size_splits_and_frameworks(catalog):
    assert len(catalog) >= 12
    splits = [p.split for p in catalog.values()]
    assert 3 <= splits.count("holdout") <= len(catalog) // 2
    assert {"pytorch", "tensorflow", "jax"} <= {p.framework for p in catalog.values()}
    assert len({p.key for p in catalog.values()}) == len(catalog)


def test_catalog_has_the_required_kinds(catalog):
    clean = ClusterConditions()
    runs = {name: predict(p, p.defaults, clean) for name, p in catalog.items()}
    inputs = {p.input for p in catalog.values()}
    assert {"tabular", "image", "text"} <= inputs
    assert any(r.failure == "oom" for r in runs.values()), "one OOMs at its default batch"
    assert any(
        p.defaults.learning_rate > 10 * p.best_learning_rate(p.defaults.batch_size)
        for p in catalog.values()
    ), "one has a far-too-high default learning rate"
    ok = {n: r for n, r in runs.items() if r.failure == "none"}
    assert any(r.cpu_util_p95 > 0.9 and r.gpu_util_p95 < 0.5 for r in ok.values()), "CPU-bound"
    assert any(r.gpu_mem_util_p95 > 0.75 for r in ok.values()), "memory-bound"
    assert any(r.gpu_util_p95 < 0.2 for r in ok.values()), "small overhead-bound"
    # visibly different resource demands
    gpu = sorted(r.gpu_util_p95 for r in ok.values())
    assert gpu[-1] - gpu[0] > 0.6


def test_every_profile_has_an_example_config(catalog):
    import configparser

    for name, p in catalog.items():
        ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
        ini.read(EXAMPLES / name / "config.ini")
        assert ini["workload"]["dataset"] == p.dataset
        assert ini["workload"]["model"] == p.model
        assert ini["workload"]["framework"] == p.framework
        assert int(ini["hyperparameters"]["batch_size"]) == p.defaults.batch_size
        assert float(ini["hyperparameters"]["learning_rate"]) == p.defaults.learning_rate


def write_variant(tmp_path, section, key, value=None, delete=False):
    data = (WORKLOADS / "cifar10-resnet18.toml").read_text()
    lines = []
    current = None
    for line in data.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == section and line.split("=")[0].strip() == key:
            if delete:
                continue
            line = f"{key} = {value}"
        lines.append(line)
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines))
    return path


def test_missing_field_names_file_and_key(tmp_path):
    path = write_variant(tmp_path, "optimization", "b_noise", delete=True)
    with pytest.raises(ConfigError, match=r"bad\.toml.*b_noise.*\[optimization\]"):
        load_profile(path)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("memory", "params_per_layer", "-5"),
        ("compute", "cpu_s_per_sample", "-0.1"),
        ("loss", "alpha", "0"),
        ("defaults", "batch_size", "0"),
        ("defaults", "epochs", "2.5"),
        ("limits", "gpus", '"one"'),
        ("workload", "split", '"test"'),
        ("loss", "dataset_size", "nan"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, section, key, value):
    path = write_variant(tmp_path, section, key, value)
    with pytest.raises(ConfigError, match=rf"bad\.toml: \[{section}\] {key}"):
        load_profile(path)


def test_unknown_key_and_bad_toml_and_unknown_name(tmp_path):
    path = tmp_path / "typo.toml"
    text = (WORKLOADS / "cifar10-resnet18.toml").read_text()
    path.write_text(text.replace("b_noise =", "b_nosie ="))
    with pytest.raises(ConfigError, match=r"b_nosie|b_noise"):
        load_profile(path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[workload\nname=")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_profile(broken)
    with pytest.raises(ConfigError, match="unknown workload profile 'nope'"):
        load_profile("nope")


def test_cluster_conditions_load_and_reject_bad(tmp_path):
    cond = load_conditions()
    assert 0 < cond.contention < 1
    bad = tmp_path / "cluster.toml"
    bad.write_text("[conditions]\ncontention = -0.2\n")
    with pytest.raises(ConfigError, match="contention"):
        load_conditions(bad)
    bad.write_text("[conditions]\ncontentoin = 0.2\n")
    with pytest.raises(ConfigError, match="unknown key 'contentoin'"):
        load_conditions(bad)


def test_profiles_round_trip_as_toml_dict(catalog):
    from jpo.sim.response import profile_from_dict

    for p in catalog.values():
        assert profile_from_dict(p.as_toml_dict(), source=p.source) == p
        tomllib.loads((WORKLOADS / f"{p.name}.toml").read_text())
