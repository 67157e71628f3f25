"""The configuration side of a sweep (ops/sweep.py): conf/sweep/ composed with conf/config.yaml, the search
space as Ray Tune domains, a trial's variant config, and the best trial written back as a Hydra experiment
file that composes into params.yaml with exactly the trial's config (checked when written)."""
import copy
import re
from pathlib import Path

import yaml
from hydra import compose as hydra_compose, initialize_config_dir
from omegaconf import OmegaConf

DOMAINS = ("loguniform", "uniform", "randint", "choice")
# What decides a variant's data or shape of training: the same for every trial (its data is loaded once).
NOT_SAMPLED = ("reject", "uploads", "corrections", "reads", "members")
NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def compose(conf_dir, overrides=()) -> dict:
    """conf_dir/config.yaml composed with Hydra overrides, resolved: what `python -m pipeline.params`
    composes from the same overrides (it reads the repository's conf/; this any copy of it)."""
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def sweep_params(conf_dir, overrides=()):
    """(the sweep's settings, params as the sweep's trials start from them): config.yaml + `+sweep=default`
    + the overrides, split apart; params is what params.yaml would hold with the same overrides."""
    composed = compose(conf_dir, ["+sweep=default", *overrides])
    return composed.pop("sweep"), composed


def model_recipes(conf_dir) -> list:
    return sorted(p.stem for p in (Path(conf_dir) / "model").glob("*.yaml"))


def with_variant(conf_dir, params, variant, overrides=()):
    """params holding variants.<variant>: already a slot, or a recipe of conf/model/ added as one (as
    `+model@variants.<variant>=<variant>` would). -> params (recomposed when added)."""
    if variant in params["variants"]:
        return params
    if variant not in model_recipes(conf_dir):
        raise SystemExit(f"sweep: no variant or recipe {variant!r} (variants: {', '.join(params['variants'])}; "
                         f"recipes: {', '.join(model_recipes(conf_dir))})")
    return sweep_params(conf_dir, [f"+model@variants.{variant}={variant}", *overrides])[1]


def leaves(space, prefix=()):
    """{"train": {"epochs": {"choice": [..]}}} -> [(("train", "epochs"), {"choice": [..]})]."""
    for key, value in space.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAINS:
            yield (*prefix, key), value
        elif isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            raise SystemExit(f"sweep: space.{'.'.join((*prefix, key))} is {value!r}: give one of "
                             f"{', '.join('{' + d + ': ...}' for d in DOMAINS)}")


def check_space(space, variant_cfg):
    """Every key of the space must be a key of the variant's config, and none of NOT_SAMPLED."""
    for path, _ in leaves(space):
        node = variant_cfg
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise SystemExit(f"sweep: space.{'.'.join(path)}: the variant has no {'.'.join(path)} "
                                 f"(drop it: --set '~sweep.space.{'.'.join(path)}')")
            node = node[part]
        if path[0] in NOT_SAMPLED:
            raise SystemExit(f"sweep: {path[0]} decides the trials' data: set it with --set, do not sample it")


def tune_space(space):
    """The space as Ray Tune's param_space: the same nesting, leaves tune.loguniform(...) etc."""
    from ray import tune

    out = {}
    for path, leaf in leaves(space):
        (kind, args), = leaf.items()
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = getattr(tune, kind)(args) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def plain(value):
    """numpy scalars (Tune's randint, uniform) -> Python numbers, recursively: YAML and MLflow want them."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def apply(variant_cfg, sampled) -> dict:
    """The variant's config with a trial's sampled values (nested like the space) in their places."""
    out = copy.deepcopy(variant_cfg)
    for key, value in sampled.items():
        out[key] = apply(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else plain(value)
    return out


def diff(base, wanted, path=""):
    """The smallest nested dict that, merged onto base the way Hydra merges a config, gives wanted (a
    dict replaced whole where base lacks it; lists whole). Keys base has and wanted lacks cannot be written
    in a config file: SystemExit."""
    if missing := [k for k in base if k not in wanted]:
        raise SystemExit(f"sweep: {path or 'params'} lacks {missing} that conf/ has: an experiment file cannot delete")
    out = {}
    for key, value in wanted.items():
        if key not in base or not (isinstance(value, dict) and isinstance(base[key], dict)):
            if key not in base or base[key] != value or type(base[key]) is not type(value):
                out[key] = value
        elif sub := diff(base[key], value, f"{path}.{key}" if path else key):
            out[key] = sub
    return out


def experiment_file(conf_dir, name) -> Path:
    return Path(conf_dir) / "experiment" / f"sweep_{name}.yaml"


def write_override(conf_dir, name, params, header) -> Path:
    """conf/experiment/sweep_<name>.yaml setting what params (the best trial's) changes from conf/ as it is,
    then checked: conf/ composed with +experiment=sweep_<name> must be exactly params. -> the file."""
    path = experiment_file(conf_dir, name)
    override = diff(compose(conf_dir), params)
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    path.write_text("# @package _global_\n" + comments +
                    yaml.safe_dump(override, sort_keys=False, default_flow_style=None, width=110))
    try:
        composed = compose(conf_dir, [f"+experiment=sweep_{name}"])
    except BaseException:  # Hydra refused it: no file left behind that the next sweep of this name would refuse
        path.unlink()
        raise
    if composed != params:
        path.unlink()
        raise SystemExit(f"sweep: conf/ + {path.name} does not compose into the trial's params: "
                         f"{diff_summary(composed, params)}")
    return path


def diff_summary(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if (found := diff_summary(a.get(key), b.get(key), f"{path}.{key}" if path else key)) is not None:
                return found
        return None
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} != {b!r}"
