"""Stage `register`: pick the best variant on validation data, register it, move `candidate`.

The champion must be able to say "not a digit": among the variants that reject at least
`evaluate.champion_min_non_digits_rejected` of the held-out generated non-digits, the best validation
accuracy wins. If none can, the best with a "not a digit" class, unless it reads validation digits more
than `evaluate.champion_max_val_gap` worse than the best of all, which then wins; the report says so.
The test split
plays no part in the choice. The alias only moves after the registered version's
model.onnx has been downloaded back from the registry and its sha256 checked: `candidate` never
points at an unverified or half-logged version. Writes champion/champion.json and champion/report.md.
`champion`, what servers follow, is never moved here: the `promote` stage (ops/gate.py) moves it to the
candidate when the candidate is at least as good on validation (and `python -m ops.promote` by hand).

What is registered is the training run's `served` model: the trained model.onnx byte for byte, its
temperature and threshold (serving.json), and MLflow's python_function flavour answering as the API does
(digits/pyfunc.py, with the core's code), so `mlflow models serve -m models:/digits@champion` and
MLflow's own `load_model` (mlflow.pyfunc) read image bytes the way POST /predict does. Logged once per run and evaluation.
"""
import hashlib
import importlib.metadata
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import digits

from digits.contract import CANDIDATE, INPUT, MODEL_NAME
from pipeline import tracking
from pipeline.params import load

REPORT_DIR = Path("reports")
CHAMPION_DIR = Path("champion")


class RegisterError(RuntimeError):
    pass


SERVED = "served"  # the logged model that is registered (a LoggedModel of the training run)
SERVED_TAG = "served_model"  # the run's tag: {"uri", "serving"} of its served model, to log it once
SERVING_KEYS = ("temperature", "rejection_threshold", "variant")


class ServedFlavour:
    """What Model.log calls to write the served model's folder: model.onnx (the trained bytes), serving.json,
    code/ (the core package and conf/image.toml), requirements, and the MLmodel's flavours: `onnx` (the bare
    graph, for mlflow.onnx.load_model) and `python_function` (digits.pyfunc: bytes in, the API's answers out)."""
    __name__ = "digits"

    def __init__(self, onnx_bytes, serving):
        self.onnx_bytes, self.serving = onnx_bytes, serving

    def save_model(self, path, mlflow_model, **_):
        from digits import pyfunc
        from digits.settings import CONF

        from mlflow import pyfunc as mlflow_pyfunc

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.onnx").write_bytes(self.onnx_bytes)
        (path / pyfunc.SERVING).write_text(json.dumps(self.serving, indent=2, sort_keys=True) + "\n")
        shutil.copytree(Path(digits.__file__).parent, path / "code" / "digits", ignore=shutil.ignore_patterns("__pycache__"))
        (path / "code" / "conf").mkdir()
        shutil.copy(CONF, path / "code" / "conf" / "image.toml")
        pins = [f"{p}=={importlib.metadata.version(p)}" for p in ("numpy", "pillow", "onnxruntime")]
        (path / "requirements.txt").write_text("\n".join(pins) + "\n")
        (path / "python_env.yaml").write_text(f"python: {platform.python_version()}\nbuild_dependencies:\n- pip\n"
                                             "dependencies:\n- -r requirements.txt\n")
        mlflow_model.add_flavor("onnx", onnx_version=importlib.metadata.version("onnx"), data="model.onnx",
                                providers=["CPUExecutionProvider"])
        mlflow_pyfunc.add_to_model(mlflow_model, loader_module="digits.pyfunc", data="model.onnx", code="code",
                                   python_env="python_env.yaml")
        mlflow_model.save(str(path / "MLmodel"))


def served_model(mlflow, client, best) -> str:
    """The served model of the best run (logged now unless the run has one for this evaluation) -> its URI."""
    run = client.get_run(best["run_id"])
    serving = {k: best[k] for k in SERVING_KEYS} | {"classes": best.get("class_names", [str(d) for d in range(10)])}
    known = json.loads(run.data.tags.get(SERVED_TAG, "{}"))
    if known.get("serving") == serving:
        return known["uri"]
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(mlflow.artifacts.download_artifacts(best["model_uri"], dst_path=tmp)) / "model.onnx"
        onnx_bytes = trained.read_bytes()
    from mlflow.models import Model

    info = Model.log(artifact_path=None, name=SERVED, flavor=ServedFlavour(onnx_bytes, serving), run_id=best["run_id"])
    retried(client.set_tag, best["run_id"], SERVED_TAG, json.dumps({"uri": info.model_uri, "serving": serving}))
    return info.model_uri


def candidates(names):
    rows = []
    for name in names:
        metrics = json.loads((REPORT_DIR / name / "metrics.json").read_text())
        run = json.loads((Path("models") / name / "run.json").read_text())
        rows.append({**run, **{k: v for k, v in metrics.items() if k != "per_class"}})
    return rows


def choose(rows, min_non_digits_rejected=0.0, max_val_gap=0.0):
    """Best validation accuracy among the variants that reject enough non-digits. If none does: the best
    among those with a "not a digit" class (11 classes) when it reads validation digits at most
    max_val_gap under the best of all, otherwise the best of all. Ties go to the faster model, then the
    name (deterministic). (Not "the one that rejects the most": an undertrained model is unsure of
    everything, so its threshold refuses many non-digits while it reads digits badly.)"""
    def best(among):
        return max(among, key=lambda r: (r["val_accuracy"], -r["latency_ms_median"], r["variant"]))

    able = [r for r in rows if r.get("val_non_digits_rejected", 0.0) >= min_non_digits_rejected]
    if able:
        return best(able)
    top, rejecting = best(rows), [r for r in rows if r.get("classes", 10) > 10]
    if rejecting and best(rejecting)["val_accuracy"] >= top["val_accuracy"] - max_val_gap:
        return best(rejecting)
    return top


def sha256_of_registered(client, version) -> str:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=tmp)
        onnx_file = Path(path) / "model.onnx"
        if not onnx_file.is_file():
            raise RegisterError(f"version {version.version} has no model.onnx in its artifacts")
        return hashlib.sha256(onnx_file.read_bytes()).hexdigest()


def retried(write, *args, tries=4):
    """An idempotent registry write (a tag, the alias), tried again when it loses a race: MLflow's SQL store
    writes one as select-then-insert, so two register runs at once can both insert the same new tag and one
    fails on the unique key (seen: sqlite3.IntegrityError). The next try finds the row and updates it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            return write(*args)
        except MlflowException:
            if attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def verified_version(mlflow, client, name, run_id, model_uri, onnx_sha256, tags):
    """The READY version of `name` registered from this run's model_uri, its model.onnx downloaded back and
    checked against the trained file's sha256 (RegisterError otherwise: no alias moves)."""
    # A version of this run may exist already: registered by an earlier run of this stage, by one running
    # beside this one, or by one killed before it tagged the version or moved the alias. Reuse it (it is
    # verified and tagged below like a new one) rather than pile up duplicate, half-tagged versions.
    existing = sorted((v for v in client.search_model_versions(f"name='{name}'")
                       if v.run_id == run_id and v.source == model_uri and v.status == "READY"),
                      key=lambda v: int(v.version))
    version = existing[0] if existing else mlflow.register_model(model_uri, name, tags=tags)
    for _ in range(60):
        version = client.get_model_version(name, version.version)
        if version.status == "READY":
            break
        time.sleep(1)
    else:
        raise RegisterError(f"{name} version {version.version} never became READY")
    digest = sha256_of_registered(client, version)
    if digest != onnx_sha256:
        raise RegisterError(f"{name} version {version.version}: registered model.onnx sha256 {digest} differs from "
                            f"the trained one {onnx_sha256}; the alias stays where it was")
    return version


def publish(client, name, version, tags, description, alias=CANDIDATE):
    """Tag a verified version (in order: model_sha256 last), describe it, then move the alias (`candidate`:
    never `champion`, which only the promotion gate and a person move: ops/) to it."""
    for key, value in tags.items():
        retried(client.set_model_version_tag, name, version.version, key, value)
    client.update_model_version(name, version.version, description=description)
    retried(client.set_registered_model_alias, name, alias, version.version)


def finished_run(mlflow, client, run_id, whose, stage):
    """The training run `run_id` (of `whose`, trained by DVC stage `stage`), or RegisterError when the tracking
    store lacks it or it did not finish: killed or failed mid-way, whatever it logged is not a whole model."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise RegisterError(f"MLflow run {run_id} of {whose} is not in the tracking store {tracking.tracking_uri()}: "
                            f"rerun its training with `dvc repro -f {stage}`") from e
    if run.info.status != "FINISHED":
        raise RegisterError(f"MLflow run {run_id} of {whose} is {run.info.status}, not FINISHED: "
                            f"rerun its training with `dvc repro -f {stage}`")
    return run


def register(best, params):
    mlflow = tracking.setup()
    client = mlflow.MlflowClient()
    finished_run(mlflow, client, best["run_id"], repr(best["variant"]), f"train@{best['variant']}")
    model_uri = served_model(mlflow, client, best)
    version = verified_version(mlflow, client, MODEL_NAME, best["run_id"], model_uri, best["onnx_sha256"],
                               {"variant": best["variant"], "run_id": best["run_id"]})
    digest = best["onnx_sha256"]  # what the registry holds: checked by verified_version
    config = {"seed": params["seed"], "data": params["data"], **params["variants"][best["variant"]]}
    tags = {
        "variant": best["variant"],
        "run_id": best["run_id"],
        "val_accuracy": f"{best['val_accuracy']:.6f}",
        "test_accuracy": f"{best['test_accuracy']:.6f}",
        "temperature": f"{best['temperature']:.6f}",
        "rejection_threshold": f"{best['rejection_threshold']:.6f}",
        "test_ece_calibrated": f"{best['test_ece_calibrated']:.6f}",
        "latency_ms_median": f"{best['latency_ms_median']:.4f}",
        "val_non_digits_rejected": f"{best['val_non_digits_rejected']:.6f}",
        "classes": ",".join(best.get("class_names", [str(d) for d in range(10)])),
        "input": INPUT,
        "config": json.dumps(config, sort_keys=True),
        "git_commit": tracking.git_commit(),
        "model_sha256": digest,  # last: servers refuse a version without it, so one killed mid-tagging is never served
    }
    publish(client, MODEL_NAME, version, tags, f"{best['variant']}: validation accuracy {best['val_accuracy']:.4%}, "
                                               f"test accuracy {best['test_accuracy']:.4%}")
    return version.version


def report(rows, best, version, min_non_digits_rejected):
    CHAMPION_DIR.mkdir(exist_ok=True)
    able = best.get("val_non_digits_rejected", 0.0) >= min_non_digits_rejected
    lines = [f"# Candidate: `{best['variant']}` → `models:/{MODEL_NAME}@{CANDIDATE}` (version {version})",
             "", "It serves (`champion`) once the promotion gate finds it at least as good as the champion: "
             "champion/promotion.md.",
             "", f"Chosen on validation data: the best validation accuracy among the variants that reject at least "
             f"{min_non_digits_rejected:.0%} of the held-out generated non-digits"
             + ("." if able else " — **none does, so the best with a \"not a digit\" class within the validation gap, or the best of all.**"),
             "Test figures are reported, never used to choose. Temperature T and the rejection threshold come from "
             "the validation split; ECE is on test, before → after temperature scaling.", "",
             "| variant | classes | val accuracy | non-digits rejected (val) | test accuracy | test errors | "
             "test digits rejected | T | ECE → calibrated | ms/digit | params | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["val_accuracy"]):
        mark = " ★" if r is best else ""
        lines.append(f"| {r['variant']}{mark} | {r.get('classes', 10)} | {r['val_accuracy']:.4%} | "
                     f"{r.get('val_non_digits_rejected', 0.0):.2%} | {r['test_accuracy']:.4%} | {r['test_errors']} | "
                     f"{r['test_rejected_share']:.2%} | {r['temperature']:.3f} | "
                     f"{r['test_ece']:.4f} → {r['test_ece_calibrated']:.4f} | {r['latency_ms_median']:.3f} | "
                     f"{r['parameters']:,} | {r['train_seconds']:.0f} |")
    (CHAMPION_DIR / "report.md").write_text("\n".join(lines) + "\n")
    (CHAMPION_DIR / "champion.json").write_text(json.dumps(
        {"variant": best["variant"], "version": int(version), "run_id": best["run_id"],
         "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"],
         "model_sha256": best["onnx_sha256"]}, indent=2) + "\n")


def main():
    params = load()
    rows = candidates(params["variants"])
    bar = params["evaluate"]["champion_min_non_digits_rejected"]
    best = choose(rows, bar, params["evaluate"]["champion_max_val_gap"])
    version = register(best, params)
    report(rows, best, version, bar)
    print(f"register: {best['variant']} (val {best['val_accuracy']:.4%}, test {best['test_accuracy']:.4%}) "
          f"is {MODEL_NAME} version {version}, alias @{CANDIDATE} (the promote stage decides on @champion)")


if __name__ == "__main__":
    try:
        main()
    except RegisterError as e:
        raise SystemExit(f"register: {e}")
