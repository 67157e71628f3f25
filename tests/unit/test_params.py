"""conf/ (Hydra) is the single source of truth; params.yaml (what DVC tracks) must be its composition."""
import yaml

from testkit import ROOT
from pipeline.params import compose_params, load, model_config


def test_params_yaml_is_exactly_the_composition_of_conf():
    assert load(ROOT / "params.yaml") == compose_params(), "run `python -m pipeline.params`"


def test_dense_and_cnn_variants_exist_and_are_complete():
    params = compose_params()
    assert list(params["variants"]) == ["dense", "cnn", "robust_fast"]  # the quick profile
    for name, variant in params["variants"].items():
        assert set(variant) - {"members"} == {"architecture", "train", "augment", "reject", "uploads", "corrections",
                                               "reads"}, name
    assert params["variants"]["dense"]["architecture"]["kind"] == "dense"
    assert params["variants"]["robust_fast"]["augment"]["enabled"] is True
    assert params["variants"]["robust_fast"]["reject"] is True and params["variants"]["cnn"]["reject"] is False


def test_the_full_profile_keeps_the_quick_variants_and_adds_the_long_trainings():
    full = compose_params(["+experiment=full"])
    assert list(full["variants"]) == ["dense", "cnn", "robust_fast", "strong", "robust_long", "ensemble_long"]
    quick = compose_params()
    assert all(full["variants"][name] == variant for name, variant in quick["variants"].items())
    assert {k: v for k, v in full.items() if k != "variants"} == {k: v for k, v in quick.items() if k != "variants"}


def test_ci_trains_the_champions_own_recipe_on_a_slice():
    ci, quick = compose_params(["+experiment=robustness_ci"]), compose_params()
    assert ci["variants"] == {"robust_fast": quick["variants"]["robust_fast"]}  # the same network, epochs, everything
    assert ci["data"]["train_limit"] < 60000 and ci["uploads"]["train"] < quick["uploads"]["train"]


def test_the_ensemble_is_added_on_request_and_is_robusts_recipe_twice():
    params = compose_params(["+model@variants.ensemble=ensemble"])
    ensemble = dict(params["variants"]["ensemble"])
    assert ensemble.pop("members") == 2 and ensemble == model_config("robust")
    assert "ensemble" in compose_params(["+experiment=smoke"])["variants"]  # so the tests train one


def test_the_long_ensemble_is_robust_longs_recipe_twice_and_stays_out_of_the_test_pipelines():
    ensemble = model_config("ensemble_long")
    assert ensemble.pop("members") == 2 and ensemble == model_config("robust_long")
    assert "ensemble_long" not in compose_params()["variants"]  # the full profile's
    for experiment in ("smoke", "robustness_ci"):  # two full trainings would take make test past its time
        assert "ensemble_long" not in compose_params([f"+experiment={experiment}"])["variants"], experiment


def test_hydra_overrides_reach_params():
    params = compose_params(["variants.cnn.train.epochs=3", "+experiment=smoke"])
    assert params["variants"]["cnn"]["train"]["epochs"] == 3
    assert params["data"]["train_limit"] == 4000


def test_every_train_stage_declares_its_own_variant_params():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["foreach"] == "${variants}"
    assert "variants.${key}" in stages["train"]["do"]["params"]


def test_a_model_config_composes_alone_with_overrides():
    fast = model_config("fast", ["train.batch_size=256", "augment.elastic=1.5"])
    assert fast["train"]["batch_size"] == 256 and fast["augment"]["elastic"] == 1.5
    assert fast["architecture"] == model_config("fast")["architecture"]
    assert model_config("cnn") == compose_params()["variants"]["cnn"]
