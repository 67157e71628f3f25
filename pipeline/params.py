"""Compose conf/ (Hydra) into params.yaml, the file DVC tracks.

    python -m pipeline.params                       # params.yaml from conf/ as it is
    python -m pipeline.params +experiment=smoke     # any Hydra override works
    python -m pipeline.params --check               # exit 1 if params.yaml differs from conf/

Stages read params.yaml (via `load`), so `dvc exp run -S ...` and a plain `dvc repro` agree.
"""
import sys
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
PARAMS = Path("params.yaml")
HEADER = "# Generated from conf/ by `python -m pipeline.params`: edit conf/, not this file.\n"


def compose_params(overrides=()) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def model_config(name, overrides=()) -> dict:
    """conf/model/<name>.yaml as Hydra composes it (its own `defaults:` applied): one variant's config.
    overrides: Hydra overrides relative to the variant, e.g. "train.epochs=3"."""
    # Composed into config.yaml's `dense` slot: any slot of the model group would do.
    composed = compose_params([f"model@variants.dense={name}", *(f"variants.dense.{o}" for o in overrides)])
    return composed["variants"]["dense"]


def dump(params: dict) -> str:
    return HEADER + yaml.safe_dump(params, sort_keys=False)


def load(path=PARAMS) -> dict:
    return yaml.safe_load(Path(path).read_text())


def main(argv):
    check = "--check" in argv
    params = compose_params([a for a in argv if a != "--check"])
    if check:
        if load() != params:
            sys.exit("params.yaml is out of date with conf/: run `python -m pipeline.params`")
        print("params.yaml matches conf/")
        return
    PARAMS.write_text(dump(params))
    print(f"wrote {PARAMS} ({', '.join(params['variants'])})")


if __name__ == "__main__":
    main(sys.argv[1:])
