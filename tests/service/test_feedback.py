"""POST /feedback and GET /feedback/stats through Flask's test client, on a real SQLite store in a temporary
folder, and the operator's `python -m serve feedback ...` on the same store."""
import base64
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from serve import answer_id, create_app
from serve.config import Settings
from serve.store import Store
from testkit import ROOT
from testkit.images import on_paper


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "feedback"


@pytest.fixture
def make_client(champion, store_dir):
    def make(**settings):
        settings = {"model_poll_seconds": 0, "feedback_dir": str(store_dir), "feedback_rate": 0, **settings}
        return create_app(champion, Settings(**settings)).test_client()
    return make


def error_of(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code and response.get_json()["error"]["message"]


def store_of(store_dir):
    return Store.open(Settings(feedback_dir=str(store_dir)).feedback_url())


def test_an_answers_id_is_a_correction_any_worker_can_take(make_client, digits, store_dir):
    image, label = digits[0][4], int(digits[1][4])
    data = on_paper(image)
    answer = make_client().post("/predict", data=data, content_type="image/png").get_json()
    assert answer["prediction"] == label and 100 < len(answer["id"]) < 700
    other = make_client(feedback_secret=b"x" * 32)  # another server: another key
    error_of(other.post("/feedback", json={"id": answer["id"], "label": 3}), 404, "unknown_id")
    secret = b"s" * 32  # two workers of one server share the key gunicorn.conf.py made before they forked
    first, second = make_client(feedback_secret=secret), make_client(feedback_secret=secret)
    answer = first.post("/predict", data=data, content_type="image/png").get_json()
    kept = second.post("/feedback", json={"id": answer["id"], "label": "not a digit"})
    assert kept.status_code == 201, kept.get_json()
    body = kept.get_json()
    assert body == {"id": body["id"], "label": "not_a_digit", "answer": str(label), "model": "digits@3",
                    "state": "pending", "duplicate": False}
    again = first.post("/feedback", json={"id": answer["id"], "label": "not_a_digit"})
    assert again.status_code == 200 and again.get_json()["id"] == body["id"] and again.get_json()["duplicate"]
    row, = store_of(store_dir).rows(with_images=True)
    from hashlib import sha256
    assert row["sha256"] == sha256(data).hexdigest() and row["source"] == "id" and row["raw"] is None
    assert abs(row["confidence"] - answer["confidence"]) < 1e-6
    seen = first.post("/predict?debug=1", data=data, content_type="image/png").get_json()["input"]
    png = Image.open(io.BytesIO(base64.b64decode(seen.partition(",")[2])))
    assert np.array_equal(np.frombuffer(row["image28"], np.uint8).reshape(28, 28), np.asarray(png))


def test_an_id_that_was_changed_or_is_too_old_is_refused(make_client, digits):
    client = make_client(feedback_secret=b"k" * 32, feedback_id_seconds=60)
    answer = client.post("/predict", data=on_paper(digits[0][0]), content_type="image/png").get_json()
    token = answer["id"]
    forged = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for bad in (forged, token[:-2], "x", "!" * 10, token + token):
        error_of(client.post("/feedback", json={"id": bad, "label": 1}), 404, "unknown_id")
    error_of(client.post("/feedback", json={"id": token, "label": 1, "answer": "blank"}), 400, "bad_request")
    said = answer_id.read(b"k" * 32, token, 60)
    old = answer_id.issue(b"k" * 32, said.image28 / 255, said.sha256, answer, said.model, now=time.time() - 61)
    error_of(client.post("/feedback", json={"id": old, "label": 1}), 410, "expired_id")


def test_feedback_takes_the_image_the_three_ways_predict_does(make_client, digits, store_dir):
    client = make_client()
    images = [on_paper(digits[0][i]) for i in range(4)]
    encoded = base64.b64encode(images[2]).decode()
    sent = [
        client.post("/feedback", data={"image": (io.BytesIO(images[0]), "a.png"), "label": "4", "answer": "9"}),
        client.post("/feedback", data={"file": (io.BytesIO(images[1]), "b.png"), "label": "not_a_digit"}),
        client.post("/feedback", json={"image": encoded, "label": 0, "answer": 6, "model": "digits@3",
                                       "confidence": 0.51}),
        client.post("/feedback?label=8&answer=blank", data=images[3], content_type="image/png"),
    ]
    assert [r.status_code for r in sent] == [201] * 4, [r.get_json() for r in sent]
    rows = store_of(store_dir).rows()
    assert [(r["label"], r["answer"], r["model"], r["source"]) for r in rows] == [
        ("4", "9", None, "upload"), ("not_a_digit", None, None, "upload"), ("0", "6", "digits@3", "upload"),
        ("8", "blank", None, "upload")]
    assert rows[2]["confidence"] == 0.51
    stats = client.get("/feedback/stats").get_json()
    assert stats == {"total": 4, "by_label": {"0": 1, "4": 1, "8": 1, "not_a_digit": 1},
                     "by_model": {"digits@3": 1, "unknown": 3}, "by_state": {"pending": 4}}


def test_bad_feedback_is_a_clear_json_4xx(make_client, digits):
    client = make_client(feedback_max_bytes=20_000)
    data = on_paper(digits[0][0])
    for label in (10, "10", -1, "seven", True, None, 7.0):
        error_of(client.post("/feedback", json={"image": base64.b64encode(data).decode(), "label": label}),
                 400, "bad_label")
    error_of(client.post("/feedback", json={"label": 3}), 400, "no_image")
    error_of(client.post("/feedback?label=3", data=b"", content_type="image/png"), 400, "empty")
    error_of(client.post("/feedback", json={"label": 3, "id": "abc", "image": "aGk="}), 400, "bad_request")
    error_of(client.post("/feedback", json={"label": 3, "note": "hi", "image": "aGk="}), 400, "bad_request")
    error_of(client.post("/feedback", data={"image": (io.BytesIO(data), "a.png"), "label": "3", "x": "y"}), 400,
             "bad_request")
    error_of(client.post("/feedback?label=3", data=b"not an image", content_type="image/png"), 400, "not_an_image")
    error_of(client.post("/feedback?label=3&confidence=2", data=data, content_type="image/png"), 400, "bad_request")
    error_of(client.post("/feedback?label=3", data=b"\0" * 20_001, content_type="image/png"), 413,
             "request_entity_too_large")
    assert client.post("/predict", data=b"\0" * 20_001, content_type="image/png").status_code == 400  # its own limit


def test_too_many_from_one_client_and_too_many_waiting(make_client, digits):
    client = make_client(feedback_rate=60, feedback_burst=3)
    images = [on_paper(digits[0][i]) for i in range(5)]
    statuses = [client.post("/feedback?label=1", data=d, content_type="image/png") for d in images]
    assert [r.status_code for r in statuses] == [201, 201, 201, 429, 429]
    error_of(statuses[3], 429, "too_many_requests")
    assert statuses[3].headers["Retry-After"] == "1"
    other = create_app(client.application.serving.champion, client.application.settings).test_client()
    assert other.post("/feedback?label=1", data=images[3], content_type="image/png",
                      environ_base={"REMOTE_ADDR": "127.0.0.2"}).status_code == 201  # another client, its own
    full = make_client(feedback_max_pending=4)  # 4 wait for review now
    error_of(full.post("/feedback?label=2", data=images[4], content_type="image/png"), 507, "store_full")


def test_the_upload_itself_is_kept_only_when_the_operator_says_and_under_the_cap(make_client, digits, store_dir):
    small, large = on_paper(digits[0][0]), on_paper(digits[0][1], size=400)
    assert len(small) < len(large)
    make_client().post("/feedback?label=1", data=small, content_type="image/png")
    client = make_client(feedback_store_raw=True, feedback_raw_max_bytes=len(small))
    assert client.post("/feedback?label=2", data=small, content_type="image/png").status_code == 201
    assert client.post("/feedback?label=3", data=large, content_type="image/png").status_code == 201
    assert [r["raw"] for r in store_of(store_dir).rows(with_images=True)] == [None, small, None]


def test_predict_does_not_load_the_store(bundle):
    code = ("import sys; from serve import create_app; app = create_app(); c = app.test_client();"
            "from testkit.images import png_bytes; import numpy as np;"
            "r = c.post('/predict', data=png_bytes(np.zeros((28, 28), np.uint8)), content_type='image/png');"
            "assert r.status_code == 200 and r.get_json()['id'];"
            "print(sorted(m for m in ('serve.store', 'sqlalchemy', 'alembic') if m in sys.modules))")
    from testkit.server import server_env
    # ACCESS_LOG off: the app's access line would go to stdout too (CI=true's fresh clone printed it first)
    run = subprocess.run([sys.executable, "-c", code], env=server_env(bundle, MODEL_POLL_SECONDS="0", ACCESS_LOG="off"),
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]", run.stdout


def test_the_operator_lists_reviews_exports_and_deletes(make_client, digits, store_dir, tmp_path):
    client = make_client()
    for i, label in enumerate((5, 6, 7)):
        assert client.post(f"/feedback?label={label}&answer=1", data=on_paper(digits[0][i]),
                           content_type="image/png").status_code == 201

    def cli(*args, ok=True):
        run = subprocess.run([sys.executable, "-m", "serve", "feedback", *args], capture_output=True, text=True,
                             cwd=ROOT, timeout=120, env={**__import__("os").environ, "FEEDBACK_DIR": str(store_dir)})
        assert (run.returncode == 0) == ok, run.stdout + run.stderr
        return run.stdout

    listed = [json.loads(line) for line in cli("list", "--json").splitlines()]
    assert [(r["label"], r["state"]) for r in listed] == [("5", "pending"), ("6", "pending"), ("7", "pending")]
    ids = [r["id"] for r in listed]
    assert "correction" in cli("review", str(ids[0]), "accept") and cli("review", str(ids[1]), "reject")
    assert "deleted" in cli("delete", str(ids[2]))
    cli("delete", str(ids[2]), ok=False)
    cli("review", "999", "accept", ok=False)
    assert [r["id"] for r in map(json.loads, cli("list", "--state", "accepted", "--json").splitlines())] == ids[:1]
    assert "label 6" in cli("list", "--state", "rejected")
    cli("export", str(tmp_path / "out"))
    labels = [json.loads(line) for line in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert [(entry["id"], entry["label"], entry["state"]) for entry in labels] == [(ids[0], "5", "accepted")]
    png = np.asarray(Image.open(tmp_path / "out" / labels[0]["file"]))
    assert png.shape == (28, 28) and png.max() > 200  # the 28x28 the model saw, white ink on black
    cli("export", str(tmp_path / "all"), "--state", "all")
    assert len(list((tmp_path / "all").glob("*.png"))) == 2
    assert json.loads(cli("stats"))["by_state"] == {"accepted": 1, "rejected": 1}
