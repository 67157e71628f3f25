"""The core that training and serving share: numpy and Pillow only (no TensorFlow, Flask or MLflow).

    decode      uploaded bytes -> grayscale, with the format and decompression-bomb guards
    ink         where the ink is on a page; connected components
    normalise   ink -> the 28x28 the model expects, made the way MNIST was
    segment     a written number -> its digits, grouped by the model's own confidence
    contract    what a registered model takes and answers; model name, alias, tracking URI
    settings    conf/image.toml, the settings of the four above

pipeline/ draws its training uploads through this code and serve/ reads real uploads through it: the
model learns what the server will show it. It imports neither of them.
"""
