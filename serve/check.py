"""python -m serve.check: exit non-zero with a clear message unless a verified champion can be loaded.

`make serve` runs it first, so a missing model is one readable line, not a gunicorn boot loop."""
import sys

from serve.config import ConfigError, Settings
from serve.model import ModelError, load_champion, load_reader

try:
    Settings()  # a bad limit in the environment is a startup error too
    champion = load_champion()
except (ModelError, ConfigError) as e:
    sys.exit(f"serve: {e}")
copy = f", the INT8 copy of {champion.quantised_from}" if champion.quantised_from else ""
print(f"serve: champion {champion.label} ({champion.tags.get('variant')}{copy}), sha256 {champion.sha256[:12]}… verified")
if champion.note:
    print(f"serve: float, because {champion.note}")
reader, why, _ = load_reader()  # optional: without one /read cuts numbers into digits
if reader is not None:
    print(f"serve: number reader {reader.label}, sha256 {reader.sha256[:12]}… verified")
else:
    print(f"serve: no number reader ({why}): /read cuts numbers into digits")
