"""The promotion gate (issue 33): register moves `candidate`, never `champion`; the gate (ops/gate.py) promotes a
candidate when there is no champion or when it reads validation uploads at least as well, refuses a worse one
with the table saying which rows; a person promotes and rolls back (ops/promote.py), every move recorded; a
version that fails the server's checks is never made champion; servers follow `champion` only."""
import json

import numpy as np
import pytest

from digits.contract import ALIAS, CANDIDATE, MODEL_NAME, READER_NAME
from ops import gate, promote
from serve.model import SELFTEST_DIR, Registry
from serve.serving import Serving
from testkit.models import zeros_model

CFG = {"n": 12, "seed": 0, "noise_sigmas": 2.0,
       "conditions": {"digits": ["paper_jpeg", "thin_pen", "tiff", "mnist_png", "blank", "noise"],
                      "reader": ["number", "read_non_digits"]}}


@pytest.fixture
def store(registry, monkeypatch):
    """The conftest registry (an empty MLflow store) -> (add: registers bytes as a version and points
    `candidate` at it, client, uri). Moves are made by DIGITS_USER=tester."""
    import mlflow

    monkeypatch.setenv("DIGITS_USER", "tester")
    uri = promote.registry_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def add(model_bytes, name=MODEL_NAME, tags=None, candidate=True):
        version = registry(model_bytes, alias=False, name=name, tags=tags)
        if candidate:
            client.set_registered_model_alias(name, CANDIDATE, version)
        return version

    return add, client, uri


@pytest.fixture(scope="module")
def validation(mnist):
    """Stands in for data/prepared/val.npz: digits the small model did not train on."""
    return mnist["x_train"][-2000:], mnist["y_train"][-2000:]


def alias(client, name=MODEL_NAME, which=ALIAS):
    version = promote.at_alias(client, name, which)
    return version and str(version.version)


def test_register_moves_candidate_never_champion(store):
    from pipeline.register import publish

    add, client, _ = store
    first = add(b"x", candidate=False)
    client.set_registered_model_alias(MODEL_NAME, ALIAS, first)  # production, before this register run
    second = add(b"y", candidate=False)
    publish(client, MODEL_NAME, client.get_model_version(MODEL_NAME, second), {"variant": "cnn"}, "a new one")
    assert alias(client, which=CANDIDATE) == second and alias(client) == first


def test_the_gate_promotes_a_candidate_when_there_is_no_champion(store, small_onnx, validation):
    add, client, uri = store
    version = add(small_onnx)
    decision, loaded = gate.decide(client, uri, MODEL_NAME, CFG, validation)
    assert decision["promoted"] and decision["rows"] == [] and loaded.version == version
    champion = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    assert str(champion.version) == version and champion.tags["champion_by"] == "tester"
    assert champion.tags["champion_why"].startswith("gate: no digits@champion")
    assert champion.tags["champion_at"].endswith("+00:00")  # UTC
    [entry] = promote.history(client, MODEL_NAME)
    assert entry["to"] == version and entry["from"] is None and entry["by"] == "tester"
    again, _ = gate.decide(client, uri, MODEL_NAME, CFG, validation)  # candidate == champion: nothing to do
    assert not again["promoted"] and "already" in again["outcome"] and len(promote.history(client, MODEL_NAME)) == 1
    nothing, _ = gate.decide(client, uri, READER_NAME, CFG, validation, reads_with=loaded)
    assert not nothing["promoted"] and nothing["outcome"].startswith("no digits-reader@candidate")


def test_the_gate_judges_the_version_its_own_run_registered_not_a_teammates_later_candidate(store, small_onnx,
                                                                                               validation, tmp_path):
    add, client, uri = store
    mine = add(small_onnx)
    summary = tmp_path / "champion.json"
    summary.write_text(json.dumps({"version": mine}))
    theirs = add(zeros_model())  # a teammate's register run moved candidate since (to a model failing the checks)
    decision, loaded = gate.decide(client, uri, MODEL_NAME, CFG, validation, summary=summary)
    assert decision["promoted"] and decision["candidate"] == mine and loaded.version == mine
    assert f"version {theirs}" in decision["note"] and alias(client) == mine


def test_the_gate_promotes_an_equal_candidate_after_reading_the_same_images(store, small_onnx, validation):
    add, client, uri = store
    old = add(small_onnx)
    gate.decide(client, uri, MODEL_NAME, CFG, validation)
    new = add(small_onnx)  # the same model registered again: equal on every row
    decision, _ = gate.decide(client, uri, MODEL_NAME, CFG, validation)
    assert decision["promoted"] and alias(client) == new and decision["champion"] == old
    rows = {r["row"]: r for r in decision["rows"]}
    assert set(CFG["conditions"]["digits"]) < set(rows) and "ALL single digits" in rows and "ALL non-digits" in rows
    assert all(r["verdict"] == "same" and r["difference"] == 0 and r["noise"] > 0 for r in rows.values())
    assert rows["paper_jpeg"]["n"] == CFG["n"] and rows["ALL single digits"]["n"] == 4 * CFG["n"]
    assert decision["why"].startswith(f"gate: at least as good as version {old}")
    assert [e["to"] for e in promote.history(client, MODEL_NAME)] == [old, new]


def timid(model_bytes):
    """A rejection threshold just under the lowest confidence the model has on the self-test's digits: it still
    passes the self-test (the server would serve it) and refuses most real uploads, a clearly worse model."""
    from serve.model import verified
    from digits.contract import sha256
    from digits.normalise import to_model_input

    model = verified(model_bytes, sha256(model_bytes), 1, name="t", version="1", alias="a", run_id="r", tags={})
    batch = np.concatenate([to_model_input(f.read_bytes()) for f in sorted(SELFTEST_DIR.glob("*.png"))])
    return f"{float(model.calibrated(batch)[:, :10].max(axis=1).min()) * 0.99999:.9f}"


def test_the_gate_refuses_a_clearly_worse_candidate_and_says_which_rows(store, small_onnx, validation, tmp_path,
                                                                         monkeypatch):
    add, client, uri = store
    old = add(small_onnx)
    gate.decide(client, uri, MODEL_NAME, CFG, validation)
    worse = add(small_onnx, tags={"rejection_threshold": timid(small_onnx)})
    decision, loaded = gate.decide(client, uri, MODEL_NAME, CFG, validation)
    assert not decision["promoted"] and decision["outcome"] == "refused" and loaded.version == old
    assert alias(client) == old and alias(client, which=CANDIDATE) == worse
    rows = {r["row"]: r for r in decision["rows"]}
    assert rows["ALL single digits"]["verdict"] == "worse" and rows["ALL real digits"]["verdict"] == "worse"
    assert rows["ALL real digits"]["lower_is_better"] and rows["blank"]["verdict"] == "same"
    assert decision["worse"] == [r["row"] for r in decision["rows"] if r["verdict"] == "worse"]
    assert decision["why"].endswith(": " + ", ".join(decision["worse"]))
    assert len(promote.history(client, MODEL_NAME)) == 1  # a refusal is no move
    table = gate.markdown([decision], CFG)
    assert "REFUSED" in table and "| ALL single digits | accuracy | 48 |" in table and "**WORSE**" in table


def test_the_stage_writes_its_table_and_exits_0_on_a_refusal(store, small_onnx, validation, tmp_path, monkeypatch,
                                                             capsys):
    add, client, uri = store
    add(zeros_model())  # fails the server's checks: refused before any table, production stays empty
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pipeline.params.load", lambda: {"promote": CFG})
    monkeypatch.setattr("pipeline.preprocess.load_split", lambda name: validation)
    gate.main()
    out = capsys.readouterr().out
    assert "REFUSED" in out and "production is unchanged" in out and "self-test" in out
    written = json.loads((tmp_path / gate.OUT_JSON).read_text())
    assert [d["outcome"] for d in written["decisions"]][0] == "refused" and alias(client) is None
    assert "## digits: REFUSED" in (tmp_path / gate.OUT_MD).read_text()


def test_promote_rollback_and_history_record_every_move(store, small_onnx, validation, capsys, monkeypatch):
    add, client, uri = store
    first = add(small_onnx)
    gate.decide(client, uri, MODEL_NAME, CFG, validation)
    second = add(small_onnx, candidate=False)
    monkeypatch.setenv("DIGITS_USER", "alice")
    assert promote.main([second, "--why", "hotfix for ticket 12"]) == 0
    assert alias(client) == second
    tags = client.get_model_version(MODEL_NAME, second).tags
    assert (tags["champion_by"], tags["champion_why"]) == ("alice", "manual: hotfix for ticket 12")
    monkeypatch.setenv("DIGITS_USER", "bob")
    assert promote.main(["--rollback", "--why", "hotfix broke the web page"]) == 0
    assert alias(client) == first
    assert client.get_model_version(MODEL_NAME, first).tags["champion_why"] == "rollback: hotfix broke the web page"
    moves = promote.history(client, MODEL_NAME)
    assert [(m["from"], m["to"], m["by"], m["why"].split(":")[0]) for m in moves] == \
        [(None, first, "tester", "gate"), (first, second, "alice", "manual"), (second, first, "bob", "rollback")]
    assert promote.main(["--rollback", "--why", "again"]) == 1  # nothing before the first champion
    capsys.readouterr()
    assert promote.main(["--history"]) == 0
    printed = capsys.readouterr().out
    assert f"digits@champion is version {first}" in printed and "alice: manual: hotfix for ticket 12" in printed


def test_rollback_goes_down_the_stack_of_champions():
    moves = [{"to": "1", "from": None, "why": "gate: a"}, {"to": "2", "from": "1", "why": "gate: b"},
             {"to": "3", "from": "2", "why": "manual: c"}, {"to": "2", "from": "3", "why": "rollback: d"},
             {"to": "4", "from": "2", "why": "gate: e"}]
    assert promote.champions(moves, "4") == ["1", "2"]
    assert promote.champions(moves[:4], "2") == ["1"]
    assert promote.champions([{"to": "5", "from": "3", "why": "gate: x"}], "5") == ["3"]  # a champion from before
    assert promote.champions(moves, "9") == ["1", "2", "4"]  # moved outside the record: back to the last recorded


def test_a_version_failing_the_servers_checks_is_refused_even_by_hand(store, small_onnx, validation, capsys):
    add, client, uri = store
    good = add(small_onnx)
    gate.decide(client, uri, MODEL_NAME, CFG, validation)
    broken = add(zeros_model(), candidate=False)
    assert promote.main([broken, "--why", "trust me"]) == 1
    assert "failed its self-test" in capsys.readouterr().err and alias(client) == good
    tampered = add(small_onnx, tags={}, candidate=False)
    client.set_model_version_tag(MODEL_NAME, tampered, "model_sha256", "0" * 64)
    assert promote.main([tampered, "--why", "trust me"]) == 1
    assert "sha256" in capsys.readouterr().err and alias(client) == good
    assert len(promote.history(client, MODEL_NAME)) == 1


def test_the_int8_copy_follows_its_source_to_champion(store, small_onnx, int8_onnx, validation):
    add, client, uri = store
    source = add(small_onnx)
    sha = client.get_model_version(MODEL_NAME, source).tags["model_sha256"]
    copy = add(int8_onnx, name="digits-int8", tags={"source_version": source, "source_sha256": sha, "check": "passed"})
    decision, _ = gate.decide(client, uri, MODEL_NAME, CFG, validation)
    assert decision["move"]["int8"] == f"digits-int8@champion -> version {copy}"
    assert alias(client, "digits-int8") == copy
    assert Registry(tracking_uri=uri).load().name == "digits-int8"  # what a server serves: the copy of the champion
    other = add(small_onnx, candidate=False)  # a float version with no copy: the copy's alias goes
    assert promote.main([other, "--why", "no int8"]) == 0
    assert alias(client, "digits-int8") is None and Registry(tracking_uri=uri).load().label == f"digits@{other}"


def test_a_running_server_follows_champion_not_candidate(store, small_onnx):
    add, client, uri = store
    first = add(small_onnx, candidate=False)
    client.set_registered_model_alias(MODEL_NAME, ALIAS, first)
    registry = Registry(tracking_uri=uri, precision="float")
    serving = Serving(registry.load(), registry)
    second = add(small_onnx)  # `candidate` moves, as register does
    assert serving.refresh() == "unchanged" and serving.champion.version == first
    client.set_registered_model_alias(MODEL_NAME, ALIAS, second)
    assert serving.refresh() == "switched" and serving.champion.version == second
