"""ops/move_store.py between two SQLite stores (seconds; tests/teams/ moves to a real tracking server): a second
move never moves an alias the target has, and champion_history arrives with the target's version numbers."""
import json

import pytest

from ops import promote
from ops.move_store import move


@pytest.fixture
def stores(tmp_path):
    """A source store with digits versions 2 and 3 (1 deleted), champion and candidate at 3, and the history
    of three moves; an empty target. -> (source uri, target uri)."""
    import mlflow

    source, target = f"sqlite:///{tmp_path}/source.db", f"sqlite:///{tmp_path}/target.db"
    client = mlflow.MlflowClient(source, source)
    experiment = client.create_experiment("digits", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_registered_model("digits")
    for i in range(3):
        run = client.create_run(experiment)
        (tmp_path / "model.onnx").write_text(str(i))
        client.log_artifact(run.info.run_id, str(tmp_path / "model.onnx"), "model")
        client.set_terminated(run.info.run_id)
        client.create_model_version("digits", f"{run.info.artifact_uri}/model", run.info.run_id,
                                    tags={"model_sha256": str(i)})
    client.delete_model_version("digits", "1")
    moves = [{"to": "1", "from": None, "why": "gate: a"}, {"to": "2", "from": "1", "why": "gate: b"},
             {"to": "3", "from": "2", "why": "manual: c"}]
    client.set_registered_model_tag("digits", promote.HISTORY, json.dumps(moves))
    for alias in ("champion", "candidate"):
        client.set_registered_model_alias("digits", alias, "3")
    return source, target


def test_a_second_move_keeps_the_targets_aliases_and_the_history_has_its_numbers(stores):
    import mlflow

    source, target = stores
    first = move(source, target, log=lambda *a: None)
    assert (first["versions"], first["aliases"]) == (2, 2)
    client = mlflow.MlflowClient(target, target)
    model = client.get_registered_model("digits")
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "2", "candidate": "2"}  # source 3 -> 2
    # Source 1 stayed behind (deleted); 2 -> 1, 3 -> 2: a rollback on the target goes to its version 1.
    assert [(m["from"], m["to"]) for m in promote.history(client, "digits")] == [(None, "1"), ("1", "2")]
    assert promote.champions(promote.history(client, "digits"), "2") == ["1"]

    client.set_registered_model_alias("digits", "champion", "1")  # moved on the target (a rollback, say)
    logged = []
    again = move(source, target, log=logged.append)
    assert (again["versions"], again["aliases"]) == (0, 0)
    assert str(client.get_registered_model("digits").aliases["champion"]) == "1"  # not set back to 2
    assert any("digits@champion kept at the target's version 1" in line for line in logged), logged
