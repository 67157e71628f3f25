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





def reader(arch, classes=12):
    """The reader (conf/reader/ctc.yaml): a strip float32 [N, 28, W, 1] -> per-frame logits [N, W/2, classes].

    Its trunk (`arch["trunk"]`) is a digit network, the `cnn` recipes' kind with valid padding, a flatten
    head and a hidden layer, made fully convolutional: the same convolutions and pools slid along the strip,
    the hidden layer a convolution over the last feature map's whole height and width, so each output
    column is what the digit network's hidden layer says of the 28x28 window there. It is slid twice, the
    second time 2 px further on (the strip padded by 12 px, then by 10), and the two interleaved: one
    frame per 2 columns, each a window centred there, fine enough for a narrow 1 squeezed between two
    digits. `init_trunk` copies a trained digit model's weights into it, so the reader starts from
    features that already tell digits apart. On top: 1-D convolutions along the line for context, and
    the logits. The CTC loss trains the logits; the exported model ends in a softmax."""
    trunk = arch["trunk"]
    inputs = keras.Input((28, None, 1), name="strip")
    sliding, size = [], 28
    for k, stage in enumerate(trunk["stages"]):
        for j, filters in enumerate(stage):
            sliding.append(layers.Conv2D(filters, trunk["kernel"], activation="relu", name=f"trunk_conv{k}_{j}"))
            size -= trunk["kernel"] - 1
        sliding.append(layers.MaxPooling2D(2))
        size //= 2
    sliding.append(layers.Conv2D(trunk["hidden"], size, activation="relu", name="trunk_hidden"))  # [N, 1, W/4, hidden]

    def slid(x):
        for layer in sliding:
            x = layer(x)
        return x

    at = [slid(layers.ZeroPadding2D(((0, 0), (12 - shift, 12 + shift)))(inputs)) for shift in (0, 2)]
    x = layers.Permute((2, 1, 3))(layers.Concatenate(axis=1)(at))  # [N, W/4, 2, hidden]
    x = layers.Reshape((-1, trunk["hidden"]), name="columns")(x)  # [N, W/2, hidden]: windows every 2 px
    for width in arch["context"]:
        x = layers.Dropout(arch["dropout"])(x)
        x = layers.Conv1D(arch["features"], width, padding="same", activation="relu")(x)
    x = layers.Dropout(arch["dropout"])(x)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(x), name="reader")

def init_trunk(model, digit_model):
    """Copy a trained digit model's convolutions and hidden layer into the reader's trunk; ValueError when
    its network is not the trunk's (conf/reader `architecture.trunk` must be the `init_from` recipe's)."""
    convs = [layer for layer in digit_model.layers if isinstance(layer, layers.Conv2D)]
    dense = [layer for layer in digit_model.layers if isinstance(layer, layers.Dense)]
    trunk = [layer for layer in model.layers if layer.name.startswith("trunk_conv")]
    target = model.get_layer("trunk_hidden")
    if len(convs) != len(trunk) or len(dense) != 2 or \
            dense[0].get_weights()[0].size != target.get_weights()[0].size or \
            any(a.get_weights()[0].shape != b.get_weights()[0].shape for a, b in zip(trunk, convs)):
        raise ValueError(f"the digit model {digit_model.name!r} is not the reader's trunk: its convolutions "
                         f"{[c.get_weights()[0].shape for c in convs]} and dense layers "
                         f"{[d.get_weights()[0].shape for d in dense]} against the trunk's "
                         f"{[c.get_weights()[0].shape for c in trunk]} and {target.get_weights()[0].shape}")
    for mine, theirs in zip(trunk, convs):
        mine.set_weights(theirs.get_weights())
    kernel, bias = dense[0].get_weights()
    target.set_weights([kernel.reshape(target.get_weights()[0].shape), bias])
