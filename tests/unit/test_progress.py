"""What `make run` shows a person: pipeline/run.py's stage lines and the training's epoch lines."""
import io

from pipeline.run import Run, clock
from pipeline.train import Progress

DVC_OUTPUT = """\
Stage 'download' didn't change, skipping
Running stage 'preprocess':
> python -m pipeline.preprocess
preprocess: train 55000, val 5000, test 10000
Running stage 'train@dense':
> python -m pipeline.train dense
train dense: epoch 1/2 done in 3 s: accuracy 0.9000; ETA 3 s

Use `dvc push` to send your updates to remote storage.
"""


def test_clock_reads_like_a_person_says_it():
    assert [clock(s) for s in (0.4, 42, 185, 3725)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]


def test_the_run_numbers_the_stages_and_times_each_one():
    screen, log = io.StringIO(), io.StringIO()
    run = Run(["download", "preprocess", "train@dense", "register"], log, out=screen)
    for line in DVC_OUTPUT.splitlines(keepends=True):
        run.line(line)
    run.finish(0)
    shown = screen.getvalue()
    assert shown == log.getvalue()  # the log file holds exactly what the screen showed
    assert "== stage 1 of 4: download unchanged, skipped" in shown
    assert "== stage 2 of 4: preprocess, 0 s in" in shown
    assert "== preprocess done in 0 s" in shown and "== stage 3 of 4: train@dense" in shown
    assert "train dense: epoch 1/2" in shown and "== train@dense done in" in shown  # the stage's own lines pass
    assert "dvc repro finished in 0 s; 2 stage(s) ran" in shown or "0 stage(s) ran" in shown
    assert shown.index("preprocess: train 55000") < shown.index("== preprocess done")


def test_a_failed_repro_says_so():
    screen = io.StringIO()
    run = Run(["download"], io.StringIO(), out=screen)
    run.line("Running stage 'download':\n")
    run.finish(255)
    assert "failed (exit 255)" in screen.getvalue()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_training_progress_shows_the_epoch_the_share_done_and_an_eta(monkeypatch):
    import pipeline.train as train

    fake = FakeClock()
    monkeypatch.setattr(train.time, "perf_counter", fake)
    lines = []
    progress = Progress("robust_fast", epochs=4, steps=100, every=10, member=0, members=2,
                        out=lambda line, flush=False: lines.append(line))
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    for batch in range(100):
        fake.now += 0.25  # 25 s an epoch
        progress.on_train_batch_end(batch)
    progress.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.9, "val_accuracy": 0.95})
    assert lines[0].startswith("train robust_fast member 1/2: epoch 1/4  40%, 10 s so far")
    # 25 s an epoch: 3 epochs left of this member, 4 of the next one.
    assert lines[-1] == ("train robust_fast member 1/2: epoch 1/4 done in 25 s: loss 0.5000, accuracy 0.9000, "
                         "val_accuracy 0.9500; ETA 2 min 55 s")
    assert len(lines) == 3  # one line every 10 s within the epoch, and the epoch's own
