"""Keras models built from a variant's `architecture` config (conf/model/*.yaml).

Every model takes float32 [N, 28, 28, 1] in [0, 1] (white ink on black) and ends in a softmax over
the ten digits, plus "not a digit" at index 10 for variants with `reject: true`: that is the model
contract the exported model.onnx keeps.
"""
import keras
from keras import layers


def dense(arch, classes=10):
    x = inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Flatten()(x)
    for units in arch["hidden"]:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(arch["dropout"])(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="probabilities")(x), name="dense")


def cnn(arch, classes=10):
    x = inputs = keras.Input((28, 28, 1), name="image")
    for stage in arch["stages"]:
        for filters in stage:
            # Batch-norm makes the conv bias redundant.
            x = layers.Conv2D(filters, arch["kernel"], padding=arch["padding"], use_bias=not arch["batch_norm"],
                              activation=None if arch["batch_norm"] else "relu")(x)
            if arch["batch_norm"]:
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x) if arch["head"] == "global_avg" else layers.Flatten()(x)
    if arch["hidden"]:
        x = layers.Dropout(arch["dropout"])(x)
        x = layers.Dense(arch["hidden"], use_bias=not arch["batch_norm"])(x)
        if arch["batch_norm"]:
            x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Dropout(arch["dropout"])(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="probabilities")(x), name="cnn")


BUILDERS = {"dense": dense, "cnn": cnn}


def average(members):
    """One model whose probabilities are the mean of its members': an ensemble that exports as a single
    ONNX graph, so evaluate, register and the server see one model under the same contract."""
    x = inputs = keras.Input((28, 28, 1), name="image")
    # Each member wrapped under its own name: the members' layers share names, the wrappers must not.
    outputs = [keras.Model(m.input, m.output, name=f"member{k}")(x) for k, m in enumerate(members)]
    return keras.Model(inputs, layers.Average(name="probabilities")(outputs), name="ensemble")


def build(arch, classes=10):
    if arch["kind"] not in BUILDERS:
        raise ValueError(f"unknown architecture kind {arch['kind']!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[arch["kind"]](arch, classes)
