"""Ctrl-C stops a training even when TensorFlow drops the KeyboardInterrupt (pipeline/train.py).

TF runs Python callbacks from C++ and turns a KeyboardInterrupt raised in one into a SystemError that it
prints and forgets; in CI a Ctrl-C'd training then carried on and its MLflow run ended FINISHED. Here a
real SIGINT is sent mid-fit and swallowed the way TF does; the training must still stop at that batch."""
import signal
import subprocess
import sys

from testkit import ROOT

TRAINING = """
import os, signal, sys
import keras, numpy as np
from pipeline import train

train.remember_ctrl_c()
print("handler:", signal.getsignal(signal.SIGINT) is train._on_ctrl_c, flush=True)

class CtrlCThatTFDrops(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        print("batch", batch, flush=True)
        if batch == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(10_000))  # bytecode: the handler runs here
            except (KeyboardInterrupt, SystemError):
                print("dropped", flush=True)

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="categorical_crossentropy")
x, y = np.zeros((80, 4), "float32"), np.eye(2, dtype="float32")[np.arange(80) % 2]
try:
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[CtrlCThatTFDrops(), train.StopOnCtrlC()])
except KeyboardInterrupt:
    print("stopped", flush=True)
    sys.exit(3)
print("finished", flush=True)
"""


def train_with_a_dropped_ctrl_c(sigint=signal.SIG_DFL):
    return subprocess.run([sys.executable, "-c", TRAINING], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def test_a_ctrl_c_that_tensorflow_drops_still_stops_the_training():
    result = train_with_a_dropped_ctrl_c()
    lines = result.stdout.split("\n")
    assert "handler: True" in lines and "dropped" in lines, result.stdout + result.stderr
    assert result.returncode == 3 and lines.index("stopped") == lines.index("dropped") + 1, result.stdout
    assert "batch 3" not in lines  # stopped at the batch the Ctrl-C came in, not at the end of the epoch


def test_a_training_started_with_ctrl_c_ignored_leaves_it_ignored():
    """nohup and background jobs ignore SIGINT on purpose: the training must not take it back."""
    result = train_with_a_dropped_ctrl_c(signal.SIG_IGN)
    assert "handler: False" in result.stdout.split("\n"), result.stdout + result.stderr
    assert result.returncode == 0 and "finished" in result.stdout and "dropped" not in result.stdout
