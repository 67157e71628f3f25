"""Users' corrections back into the pipeline, end to end at CI size: a feedback store as the server keeps it
(accepted corrections of real digits among a flood of pending wrong labels), the watermark raised past them
all, and the real `dvc repro evaluate@dense` in a copy of the repository: the corrections stage exports the
accepted ones only, dense (1 epoch, `corrections: true`) trains on their train set, evaluate reports its
accuracy on the held-out ones; the export is the same bytes when it runs again."""
import json
import sys

import numpy as np
import pytest

from digits.contract import sha256
from pipeline import corrections
from serve.store import Store
from testkit.project import BIN, copy_project, run

pytestmark = pytest.mark.pipeline

ONLY_DENSE = ("+experiment=smoke", "~variants.cnn", "~variants.robust_fast", "~variants.ensemble",
              "variants.dense.train.epochs=1", "negatives.train=300", "negatives.val=100",
              "variants.dense.corrections=true", "variants.dense.reads=data/corrections")


def test_accepted_corrections_train_a_variant_and_are_measured_held_out(tmp_path, mnist_dir, mnist):
    root = tmp_path / "project"
    root.mkdir()
    store = Store(f"sqlite:///{root}/feedback/feedback.db")  # where the server keeps it by default
    x, y = mnist["x_train"][-50:], mnist["y_train"][-50:]
    accepted = []
    for i, (image, label) in enumerate(zip(x, y)):
        for k in range(4):  # before each accepted one, 4 pending ones labelled wrong: ids under the watermark
            store.add(sha256(b"flood%d-%d" % (i, k)), str((label + 1 + k) % 10), np.roll(image, k + 1, axis=1))
        label = "not_a_digit" if i % 10 == 9 else str(label)  # 5 "not a digit" (a 10-class model leaves them out)
        ident, _ = store.add(sha256(image.tobytes()), label, image)
        store.review(ident, "accepted")
        accepted.append((sha256(image.tobytes()), label))
    store.engine.dispose()
    watermark = ident
    heldout = [a for a in accepted if corrections.held_out(a[0])]
    taken = [a for a in accepted if not corrections.held_out(a[0]) and a[1] != "not_a_digit"]
    assert heldout and taken

    env = copy_project(root, mnist_dir, *ONLY_DENSE, f"corrections.watermark={watermark}")
    log = run([str(BIN / "dvc"), "repro", "evaluate@dense"], root, env).stdout
    for stage in ("corrections", "train@dense", "evaluate@dense"):
        assert f"Running stage '{stage}'" in log
    assert f"{len(accepted) - len(heldout)} to train, {len(heldout)} held out" in log
    assert f"; {len(taken)} corrections; MLflow run" in log  # 200 pending wrong labels: none of them

    summary = json.loads((root / "reports/corrections.json").read_text())
    assert summary["watermark"] == summary["highest_id"] == watermark
    metrics = json.loads((root / "reports/dense/metrics.json").read_text())
    assert metrics["corrections_heldout_n"] == len(heldout)
    assert 0 <= metrics["corrections_heldout_accuracy"] <= 1 and metrics["test_accuracy"] > 0.5

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlruns/mlflow.db")
    [r] = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("digits").experiment_id])
    assert r.data.params["corrections_taken"] == str(len(taken)) and r.data.metrics["corrections_heldout_n"] == len(heldout)

    # Run again from the same store and watermark: the same bytes, so DVC sees nothing changed.
    run([sys.executable, "-m", "pipeline.corrections"], root, env)
    status = run([str(BIN / "dvc"), "status", "corrections"], root, env).stdout
    assert "up to date" in status, status
