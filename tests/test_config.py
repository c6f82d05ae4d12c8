"""Config loading: YAML + dotted overrides, defaults filled in, validation errors naming the key and the choices."""

import pytest

from mgs.config import Config, ConfigError, config_reference, from_dict, load_config, save_config, to_dict

BASE = {"domains": [{"name": "a", "kind": "toy", "params": {"chars": "ae"}}, {"name": "b", "kind": "toy"}]}


def test_defaults_and_overrides(tmp_path):
    import yaml

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(path, ["surgery.granularity=tensor", "grpo.group_size=8", "domains.1.weight=2",
                             "train.compare=[mixed, mgs]", "logging.wandb=null"])
    assert isinstance(cfg, Config)
    assert cfg.surgery.granularity == "tensor" and cfg.grpo.group_size == 8
    assert cfg.domains[1].weight == 2.0 and cfg.domains[0].params == {"chars": "ae"}
    assert cfg.train.compare == ("mixed", "mgs") and cfg.grpo.clip_eps == 0.2
    # the resolved config round-trips
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["grpo.group_sise=8"], "did you mean 'grpo.group_size'"),
        (["surgery.method=pcgard"], "surgery.method: 'pcgard' is not allowed; choose from"),
        (["surgery.granularity=modul"], "did you mean 'module'"),
        (["strategy.name=mixd"], "did you mean 'mixed'"),
        (["domains.0.kind=mth"], "domains.0.kind"),
        (["grpo.group_size=1"], "grpo.group_size: must be >= 2"),
        (["grpo.group_size=many"], "grpo.group_size: expected an integer"),
        (["train.micro_batch_unit=bytes"], "choose from ['auto', 'samples', 'tokens']"),
        (["rollout.top_p=1.5"], "rollout.top_p"),
        (["strategy.name=sequential"], "strategy.stages: sequential needs"),
        (["strategy.name=sequential", "strategy.stages=[{steps: 1, domains: {c: 1}}]"], "strategy.stages.0.domains"),
        (["grpo"], "must look like section.key=value"),
    ],
)
def test_validation_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        from_dict(__import__("mgs.config", fromlist=["apply_overrides"]).apply_overrides(to_dict_base(), overrides))
    assert message in str(err.value)


def to_dict_base():
    import copy

    return copy.deepcopy(BASE)


def test_no_domains_and_unknown_section():
    with pytest.raises(ConfigError, match="domains: give at least one domain"):
        from_dict({})
    with pytest.raises(ConfigError, match="unknown config key 'optimizer'; did you mean 'optim'"):
        from_dict({**BASE, "optimizer": {}})


def test_embedded_default_and_reference():
    cfg = load_config(None)
    assert cfg.model.name == "smollm2-135m-instruct"
    assert {d.kind for d in cfg.domains} >= {"math", "chat"}
    assert to_dict(cfg)["grpo"]["group_size"] == cfg.grpo.group_size
    ref = "\n".join(config_reference())
    assert "surgery.granularity (default 'module')" in ref and "domains.N.kind" in ref


def test_yaml_1_1_spellings_are_read_as_meant():
    """YAML 1.1 reads `off`/`on` as booleans and `1e-6` (no dot) as a string; the fields mean a choice and a number."""
    from mgs.config import load_config

    cfg = load_config(None, ["rollout.compile=off", "train.compile=on", "optim.lr=1e-6"])
    assert (cfg.rollout.compile, cfg.train.compile, cfg.optim.lr) == ("off", "on", 1e-6)
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="not allowed"):
        load_config(None, ["train.parallel=on"])
