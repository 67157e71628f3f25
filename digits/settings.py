"""The core's settings, read once from conf/image.toml (DIGITS_IMAGE_CONF names another file).

Python's own tomllib reads it: the core needs numpy and Pillow, nothing else. Every key must be there and
none may be unknown, so a typo is an error at import, not a setting silently left at some default.
"""
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

CONF = Path(os.environ.get("DIGITS_IMAGE_CONF") or Path(__file__).resolve().parent.parent / "conf" / "image.toml")


@dataclass(frozen=True)
class Decode:
    formats: tuple
    max_pixels: int
    bomb_pixels_per_byte: int
    bomb_min_pixels: int
    work_pixels: int
    draft_px: int


@dataclass(frozen=True)
class Normalise:
    ink_cutoff: float
    blank_peak: float
    even_light: float
    surface_px: int
    surface_rounds: int
    surface_ink_spread: float
    stroke_band: tuple
    work_box: int
    max_stroke_steps: int
    speck_share: float
    speck_grid: int
    pass_border: float
    pass_share: float


@dataclass(frozen=True)
class Segment:
    read_pixels: int
    max_parts: int
    max_group: int
    max_pieces: int
    digit_bonus: float
    min_share: float
    loose_ink_margin: float
    stacked_overlap: float
    stacked_gap: float
    two_stroke_height: float
    two_stroke_slack: float
    bit_height: float
    bit_mass: float
    light_bit_height: float
    bit_reach: float
    min_cut_width: float
    cut_width: float
    cut_width_per_stroke: float
    cut_tries: int
    cut_margin: float
    cut_margin_px: int
    piece_height: float
    piece_mass: float


@dataclass(frozen=True)
class Lines:
    ink_share: float
    gap_reach: int
    candidate_share: float
    min_page_px: int
    min_run_px: int
    min_run_share: float
    full_share: float
    edge_share: float
    clear_share: float
    side_share: float
    core_share: float
    max_width_px: int
    max_width_share: float
    max_aspect: float
    corner_px: int
    lighter_line: float
    max_skew_deg: float
    skew_step_deg: float
    skew_grid: int
    skew_pixels: int


@dataclass(frozen=True)
class Read:
    combine: str
    segmenter_margin: float


class SettingsError(ValueError):
    """conf/image.toml cannot be used; the message names the file and the key."""


def section(kind, table, path):
    names = {f.name for f in fields(kind)}
    wrong = sorted(set(table) - names)
    missing = sorted(names - set(table))
    if wrong or missing:
        raise SettingsError(f"{path} [{kind.__name__.lower()}]: " + "; ".join(
            ([f"unknown {', '.join(wrong)}"] if wrong else []) + ([f"missing {', '.join(missing)}"] if missing else [])))
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})


def load(path=CONF):
    """-> (Decode, Normalise, Lines, Segment, Read) from the file."""
    try:
        conf = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"cannot read the image settings {path}: {e}") from e
    return tuple(section(kind, conf.get(kind.__name__.lower(), {}), path) for kind in (Decode, Normalise, Lines, Segment, Read))


DECODE, NORMALISE, LINES, SEGMENT, READ = load()
