"""The Open Inference Protocol (KServe v2, what Triton and MLServer speak) over REST: the blueprint `v2`,
so that tritonclient, KServe's client or any v2 client can ask this server for digits.

    GET  /v2                                  {"name", "version", "extensions"}
    GET  /v2/health/live, /v2/health/ready    200 {"live": true}, {"ready": true}
    GET  /v2/models/NAME[/versions/V]         name, versions, platform, inputs, outputs
    GET  /v2/models/NAME[/versions/V]/ready   200 {"name", "ready": true}
    POST /v2/models/NAME[/versions/V]/infer   one input tensor, the model once for the whole batch

NAME is the served model's registered name (`digits`; its INT8 copy answers under the same name), V the
version being served; any other name or version is a 404. One input per request, either
    images  BYTES [N]             encoded images (PNG, JPEG, ...): base64 or data: URLs as JSON strings, the
                                  raw bytes in the binary extension; decoded and normalised as POST /predict does
    pixels  FP32  [N, 28, 28, 1]  the model contract itself, values in [0, 1], white ink on black: straight in
and the outputs asked for (all when `outputs` is absent or empty):
    probabilities  FP32  [N, 11]  the calibrated probabilities, digits 0-9 then "not a digit", as the model
                                  gave them (also for a blank image)
    prediction     INT64 [N]      POST /predict's digit for the same image, -1 where it says null
    confidence     FP32  [N]      POST /predict's confidence
Triton's binary tensor data extension (tritonclient's default) works both ways: the request's
Inference-Header-Content-Length header and inputs' `binary_data_size`, outputs' `binary_data` and the
request's `binary_data_output`; BYTES elements there are 4-byte little-endian lengths, each followed by
that many bytes. Every error is the protocol's {"error": "<message>"} (serve/errors.py): 400 for any bad
request, 404 for another model or version, 413 over MAX_UPLOAD_BYTES.
"""
import json
import re
import struct

import numpy as np
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import NotFound

from digits.decode import ImageError, decode, from_base64
from digits.normalise import SIZE, normalise
from serve import access, answers, uploads
from serve.openapi import V2_EXTENSIONS, V2_INPUTS, V2_OUTPUTS, V2_PLATFORM, VERSION

PREFIX = "/v2"  # serve/errors.py answers every error under it in the protocol's form
HEADER_LENGTH = "Inference-Header-Content-Length"
WIRE = {"FP32": "<f4", "INT64": "<i8"}  # the binary extension's element types: little-endian
v2 = Blueprint("v2", __name__, url_prefix=PREFIX)


def bad(message, code="bad_request"):
    """A 400 in the protocol's form; `code` is the label the rejection metric counts it under."""
    return ImageError(code, message)


@v2.get("")
def server_metadata():
    return {"name": "digits", "version": VERSION, "extensions": V2_EXTENSIONS}


@v2.get("/health/live")
def live():
    return {"live": True}


@v2.get("/health/ready")
def ready():  # as GET /ready: the champion was verified and self-tested before it was put in place
    return {"ready": True}


@v2.get("/models/<name>")
@v2.get("/models/<name>/versions/<version>")
def model_metadata(name, version=None):
    champion = served(name, version)
    return {"name": name, "versions": [champion.version], "platform": V2_PLATFORM,
            "inputs": described(V2_INPUTS), "outputs": described(V2_OUTPUTS)}


@v2.get("/models/<name>/ready")
@v2.get("/models/<name>/versions/<version>/ready")
def model_ready(name, version=None):
    served(name, version)
    return {"name": name, "ready": True}


@v2.post("/models/<name>/infer")
@v2.post("/models/<name>/versions/<version>/infer")
def infer(name, version=None):
    champion = served(name, version)  # read once: an alias switch mid-request cannot mix two models
    settings = current_app.settings
    payload, binary = request_parts()
    if "id" in payload and not isinstance(payload["id"], str):
        raise bad("`id` must be a string")
    binary_default = flag(mapping(payload, "parameters"), "binary_data_output", "parameters", False)
    wanted = requested_outputs(payload, binary_default)
    tensor = the_input(payload)
    if tensor["name"] == "images":
        batch = np.stack(images28(tensor, binary, settings))[..., None]
    else:
        batch = pixels(tensor, binary, settings.max_batch_images)
    probabilities = champion.calibrated(batch)  # one model call for the whole batch
    said = answers.digits(list(batch[..., 0]), champion, probabilities)
    access.note(champion.label, [answers.said(a) for a in said])
    values = {"probabilities": with_not_a_digit(probabilities),
              "prediction": np.array([-1 if a["prediction"] is None else a["prediction"] for a in said], np.int64),
              "confidence": np.array([a["confidence"] for a in said], np.float32)}
    return response(payload.get("id"), name, champion, {n: (values[n], as_bytes) for n, as_bytes in wanted.items()})


def described(tensors) -> list:
    return [{"name": name, "datatype": datatype, "shape": shape} for name, (datatype, shape) in tensors.items()]


def served(name, version):
    """The champion, when it is the model (and version) the path names; a 404 otherwise."""
    champion = current_app.serving.champion
    if name != champion.public_name:
        raise NotFound(f"unknown model {name!r}: this server serves {champion.public_name!r}")
    if version is not None and version != champion.version:
        raise NotFound(f"{name} version {version!r} is not served: version {champion.version} is")
    return champion


def request_parts():
    """The inference request's JSON object, and the bytes after it (the binary extension's tensors)."""
    if (request.content_encoding or "identity") != "identity":
        raise bad(f"Content-Encoding {request.content_encoding!r} is not taken: send the body uncompressed")
    body = request.get_data()  # a body over MAX_UPLOAD_BYTES is a 413 here (serve/uploads.py InMemoryRequest)
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        head, binary = body, b""
    elif re.fullmatch(r"[0-9]{1,10}", length) and int(length) <= len(body):
        head, binary = body[:int(length)], body[int(length):]
    else:
        raise bad(f"{HEADER_LENGTH} must be the length of the JSON that starts the body: {length!r} "
                  f"in a body of {len(body)} bytes")
    payload = uploads.parse_json(head)
    if not isinstance(payload, dict):
        raise bad('the body must be an inference request, a JSON object: {"inputs": [...]}')
    return payload, binary


def mapping(holder, key, where=None):
    """holder[key], an object ({} when absent)."""
    value = holder.get(key, {})
    if not isinstance(value, dict):
        raise bad(f"`{key}` of {where or 'the request'} must be a JSON object")
    return value


def flag(parameters, key, where, default):
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise bad(f"{where}: `{key}` must be true or false")
    return value


def requested_outputs(payload, binary_default) -> dict:
    """{output name: as binary?} in the order asked; every output when `outputs` is absent or empty."""
    asked = payload.get("outputs", [])
    if not isinstance(asked, list):
        raise bad("`outputs` must be a list of {\"name\": ...}")
    if not asked:
        return {name: binary_default for name in V2_OUTPUTS}
    wanted = {}
    for output in asked:
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str) or name not in V2_OUTPUTS:  # a list or object as name: no TypeError
            raise bad(f"unknown output {name!r}: the outputs are {', '.join(V2_OUTPUTS)}")
        if name in wanted:
            raise bad(f"output {name} is asked for twice")
        parameters = mapping(output, "parameters", f"output {name}")
        unsupported = sorted(k for k in parameters if k == "classification" or k.startswith("shared_memory"))
        if unsupported:
            raise bad(f"output {name}: {unsupported[0]} is not supported here (no classification or shared "
                      "memory extension)")
        wanted[name] = flag(parameters, "binary_data", f"output {name}", binary_default)
    return wanted


def the_input(payload) -> dict:
    """The one input tensor, its name, datatype and shape checked against the model's."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad("`inputs` must hold exactly one tensor: `images` (BYTES [N], encoded images) or `pixels` "
                  "(FP32 [N, 28, 28, 1] in [0, 1])")
    tensor = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or name not in V2_INPUTS:
        raise bad(f"unknown input {name!r}: send `images` (BYTES [N]) or `pixels` (FP32 [N, 28, 28, 1])")
    expected, dims = V2_INPUTS[name]
    if datatype != expected:
        raise bad(f"input {name} is {expected}, not {datatype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"input {name}: `shape` must be a list of whole numbers, not {shape!r}")
    if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
        raise bad(f"input {name} has shape {shape}: it takes [{', '.join('N' if d < 0 else str(d) for d in dims)}]")
    return tensor


def batch_size(tensor, limit) -> int:
    n = tensor["shape"][0]
    if n == 0:
        raise bad(f"input {tensor['name']} holds no image (N = 0)", "no_image")
    if n > limit:
        raise bad(f"{n} images in one request, the limit is {limit} (MAX_BATCH_IMAGES)", "too_many_images")
    return n


def tensor_data(tensor, binary):
    """(the JSON `data`, None) or (None, the binary bytes): exactly one of the two, as the request says."""
    name, parameters = tensor["name"], mapping(tensor, "parameters", f"input {tensor['name']}")
    if any(k.startswith("shared_memory") for k in parameters):
        raise bad(f"input {name}: shared memory is not supported here")
    size = parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise bad(f"{len(binary)} bytes follow the JSON header but input {name} has no binary_data_size")
        if not isinstance(tensor.get("data"), list):
            raise bad(f"input {name} needs `data` (a list) or, in the binary extension, binary_data_size")
        return tensor["data"], None
    if "data" in tensor:
        raise bad(f"input {name} has both `data` and binary_data_size: send one")
    if type(size) is not int or size != len(binary):
        raise bad(f"input {name}: binary_data_size is {size!r}, but {len(binary)} bytes follow the JSON header "
                  f"({HEADER_LENGTH})")
    return None, binary


def flat(data, depth, count, kind, name) -> list:
    """The elements of JSON `data`, flat or nested row-major (the protocol allows both) at most `depth` lists
    deep, each an instance of `kind`: exactly `count` of them."""
    found, stack = [], [(data, 0)]
    while stack and len(found) <= count:
        value, level = stack.pop()
        if isinstance(value, list) and level < depth:
            stack.extend((item, level + 1) for item in reversed(value))
        elif isinstance(value, kind) and not isinstance(value, bool):
            found.append(value)
        else:
            what = "a string" if kind is str else "a number"
            raise bad(f"input {name}: its data holds {json.dumps(value)[:40]}, not {what}")
    if len(found) != count:
        raise bad(f"input {name}: its shape says {count} elements, its data holds "
                  f"{'more' if len(found) > count else len(found)}")
    return found


def images28(tensor, binary, settings) -> list:
    """The BYTES input `images`, each element decoded and normalised exactly as POST /predict does."""
    found = []
    for index, value in enumerate(encoded(tensor, binary, settings.max_batch_images)):
        try:
            data = from_base64(value) if isinstance(value, str) else value
            found.append(normalise(decode(data, settings.max_image_pixels)))
        except ImageError as e:  # decode's own 415 and 422 too: the protocol has one status for a bad input
            raise bad(f"images[{index}]: {e.message}", e.code) from None
    return found


def encoded(tensor, binary, limit) -> list:
    """The elements of `images`: str (base64 or a data: URL) from JSON, bytes from the binary extension."""
    n = batch_size(tensor, limit)
    data, raw = tensor_data(tensor, binary)
    if raw is None:
        return flat(data, 1, n, str, "images")
    elements, offset = [], 0
    while offset < len(raw) and len(elements) <= n:
        if offset + 4 > len(raw):
            raise bad("input images: the binary data ends inside an element's 4-byte length")
        (length,), offset = struct.unpack_from("<I", raw, offset), offset + 4
        if offset + length > len(raw):
            raise bad(f"input images: element {len(elements)} says {length} bytes, {len(raw) - offset} are left")
        elements.append(raw[offset:offset + length])
        offset += length
    if len(elements) != n:
        raise bad(f"input images: its shape says {n} images, its binary data holds "
                  f"{'more' if len(elements) > n else len(elements)}")
    return elements


def pixels(tensor, binary, limit) -> np.ndarray:
    """The FP32 input `pixels` as float32 [N, 28, 28, 1], every value finite and in [0, 1]."""
    n = batch_size(tensor, limit)
    count = n * SIZE * SIZE
    data, raw = tensor_data(tensor, binary)
    if raw is None:
        try:
            values = np.array(flat(data, len(tensor["shape"]), count, (int, float), "pixels"), np.float64)
        except OverflowError:  # an integer past float64: json.loads takes any number of digits
            raise bad("input pixels: a value is far outside [0, 1]") from None
    elif len(raw) == count * 4:
        values = np.frombuffer(raw, WIRE["FP32"])
    else:
        raise bad(f"input pixels: {n} x 28 x 28 FP32 values are {count * 4} bytes, its binary data {len(raw)}")
    if not np.isfinite(values).all():
        raise bad("input pixels: NaN or infinity among the values")
    if values.min() < 0 or values.max() > 1:
        raise bad(f"input pixels: values lie in [0, 1] (white ink on black, the model contract), these from "
                  f"{values.min():g} to {values.max():g}")
    return values.astype(np.float32).reshape(n, SIZE, SIZE, 1)


def with_not_a_digit(probabilities) -> np.ndarray:
    """[N, 11] float32: an 11-class model's own output; a 10-class model's with the column POST /predict
    calls not_a_digit (1 - the digits' sum, at least 0) added."""
    p = np.asarray(probabilities, np.float32)
    return p if p.shape[1] == 11 else np.concatenate([p, np.maximum(0, 1 - p.sum(axis=1, keepdims=True))], axis=1)


def response(request_id, name, champion, outputs) -> Response:
    """The inference response: JSON, or JSON then the binary outputs' bytes (binary extension)."""
    described, chunks = [], []
    for output, (array, binary) in outputs.items():
        datatype = V2_OUTPUTS[output][0]
        tensor = {"name": output, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunks.append(array.astype(WIRE[datatype]).tobytes())
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:  # float32's shortest repr: 0.98, not 0.9800000190734863 (it reads back as the same float32)
            tensor["data"] = [float(str(x)) for x in array.ravel()] if datatype == "FP32" else array.ravel().tolist()
        described.append(tensor)
    body = {"model_name": name, "model_version": champion.version, "outputs": described,
            "parameters": {"model": champion.label}}  # name@version that answered, as /predict's "model"
    if request_id is not None:
        body["id"] = request_id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not chunks:
        return Response(head, content_type="application/json")
    return Response(head + b"".join(chunks), content_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})
