"""Presets: named sets of settings in ``presets/*.toml``, validated on load.

A preset file has sections (``[generation]``, ``[server]``, ``[osc]`` …); every key is one
:class:`Field` with a type, a range and a command-line flag, so any preset value can be
overridden on the command line (``--steps 30`` beats ``steps = 20``).  Mistakes are reported
with the file and key: an unknown key gets a "did you mean …", a wrong type or range names
the key and the allowed values.

    preset = load_preset("live")                 # or a path to a .toml file
    values = apply_overrides(preset.values, args)
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .denoised import PREVIEW_SOURCES
from .errors import UserError
from .limits import LIMITS as L
from .threads import MAX_THREADS

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
DEFAULT_PRESET = "live"
MODES = ("vj", "installation")
# A preset a control names over the wire is a file name in a preset folder, nothing more: no
# paths, no dots, so a message can never make the server read a file of its choosing.
PRESET_NAME_RULE = "1 to 64 letters, digits, '-' or '_' (the name of a preset file, without .toml)"
_PRESET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PRESET_BYTES = 1 << 20  # a preset is a page of settings; a bigger file is not one
SEED_MODES = ("random", "increment", "fixed")


class PresetError(UserError):
    """A preset that cannot be found or has a bad key or value."""


@dataclass(frozen=True)
class Field:
    key: str
    section: str  # "" for top-level keys
    kind: str  # str | int | float | bool | list
    default: object
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    flag: str | None = None  # command-line flag; default: --key with - for _
    aliases: tuple = ()  # other spellings of the flag (another command's name for the same value)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("description", "", "str", "", "one line shown by --help"),
    Field("mode", "", "str", "vj", "vj: a new prompt interrupts the run; installation: loop the playlist", choices=MODES),
    # model
    Field("model", "model", "str", "builtin", "model: builtin, builtin:shapes-dit (a FLUX.1-family transformer), builtin:tiny, a hub id, a folder or a .safetensors file"),
    Field("device", "model", "str", "auto", "auto, cpu, cuda, cuda:1, mps"),
    Field("max_latent", "model", "int", 0, "most latent positions (height × width of the latent) a request may ask "
          "for; 0: the device's own limit (CPU: 4096, i.e. 512² for SD; GPU: the largest side)", 0, 1 << 20),
    Field("threads", "model", "int", 0, "torch CPU threads (0: one fewer than the cores this process may use, so a "
          "second busy program does not stall every step)", 0, MAX_THREADS),
    Field("dtype", "model", "str", "auto", "auto, float32, float16, bfloat16 (or fp32, fp16, bf16)",
          choices=("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16")),
    # generation
    Field("prompt", "generation", "str", "a yellow star and a green circle", "prompt of the first run"),
    Field("negative_prompt", "generation", "str", "", "negative prompt", aliases=("--negative",)),
    Field("seed", "generation", "int", 0, "seed of the first run", L.seed.lo, L.seed.hi),
    Field("steps", "generation", "int", 20, "denoising steps per run", L.steps.lo, L.steps.hi),
    Field("guidance", "generation", "float", None, "guidance scale (left out: the model's default, 3 for the built-in model, 7.5 for SD)", L.guidance.lo, L.guidance.hi),
    Field("width", "generation", "int", 0, f"image width, multiple of {L.width.multiple} (0: the model's native size)", 0, L.width.hi),
    Field("height", "generation", "int", 0, f"image height, multiple of {L.height.multiple} (0: the model's native size)", 0, L.height.hi),
    Field("map_size", "generation", "int", 0, "heat map side in pixels (0: from the latent size)", 0, L.map_size.hi),
    Field("preview", "generation", "str", "denoised", "what each step's preview shows: denoised (the step's estimate of the "
          "final image, where the scheduler forms one: the picture from the first steps) or latents (the noisy latents)",
          choices=PREVIEW_SOURCES),
    Field("vae_every", "generation", "int", None, "full VAE preview every k steps (0: fast linear preview only; left out: "
          "the model's default, 1 for the built-in model, else 0)", L.vae_every.lo, L.vae_every.hi),
    Field("include_special", "generation", "bool", False, "also map the start/end/padding tokens"),
    Field("self_grid", "generation", "int", 0, "record each step's self-attention pooled to N cells a side, so "
          "export and timelapse can choose regions after the run and diffuse them (0: off; 16 costs 128 KiB a step)",
          L.self_grid.lo, L.self_grid.hi, flag="--self-grid"),
    Field("regions", "generation", "list", [], "self-attention query regions in image pixels: box:X0,Y0,X1,Y1, "
          "pixel:X,Y, polygon:X,Y,X,Y,X,Y or mask:WxH:BASE64 (repeat the flag; at most 8)", flag="--region"),
    Field("concepts", "generation", "list", [], "concept maps: any words, comma-separated or one per flag (at most "
          f"{L.concepts}); each gets a map per step of where the model puts it (ConceptAttention on Flux, OVAM on UNets)",
          flag="--concepts"),
    Field("autostart", "generation", "bool", False, "vj mode: generate `prompt` once at start-up"),
    # phases
    Field("noise", "phases", "float", 0.2, "fraction of the run in the noise phase", 0, 1, flag="--phase-noise"),
    Field("structure", "phases", "float", 0.4, "fraction of the run in the structure phase", 0, 1, flag="--phase-structure"),
    Field("detail", "phases", "float", 0.4, "fraction of the run in the detail phase", 0, 1, flag="--phase-detail"),
    Field("blend", "phases", "float", 0.1, "cross-fade width around phase boundaries", 0, 0.5, flag="--phase-blend"),
    # server
    Field("host", "server", "str", "127.0.0.1", "websocket/HTTP address (not 127.0.0.1 needs --token)"),
    Field("port", "server", "int", 8765, "websocket + HTTP viewer port", 0, 65535),
    Field("token", "server", "str", "", "shared token websocket clients must send (?token=…); required when not on 127.0.0.1"),
    Field("allow_origin", "server", "list", [], "web page origins allowed to connect besides the bridge's own viewer, "
          "like http://show-pc.local:8080 (* for any)"),
    Field("max_clients", "server", "int", 32, "most websocket clients at once; more are refused (503)", 1, 10000),
    Field("web_root", "server", "str", "web", "folder served over HTTP (the browser viewer)"),
    Field("wire_process", "server", "bool", False, "run the websocket server in a process of its own, so that "
          "encoding frames for many clients never competes with generation (docs/PROTOCOL.md)"),
    Field("preset_dirs", "server", "list", [], "more folders whose presets a `preset` control may switch to "
          "(the presets folder is always searched first)", flag="--preset-dir"),
    # osc
    Field("osc_out", "osc", "list", ["127.0.0.1:7000"], "OSC targets host:port (repeat the flag for several)"),
    Field("osc_prefix", "osc", "str", "/daam", "OSC address prefix"),
    Field("osc_in_host", "osc", "str", "127.0.0.1", "address the OSC control receiver listens on"),
    Field("osc_in_port", "osc", "int", 7001, "OSC control port (0: no OSC control)", 0, 65535),
    Field("osc_allow", "osc", "list", [], "hosts allowed to send OSC control (empty: any)"),
    # spout
    Field("spout", "spout", "bool", False, "send the selected word's map and the preview over Spout (Windows)"),
    Field("spout_name", "spout", "str", "daam", "Spout sender name prefix"),
    # installation
    Field("playlist", "installation", "list", [], "installation prompts, played in order, forever (repeat the flag)"),
    Field("pause", "installation", "float", 5.0, "seconds to hold each finished image before the next run", 0, 86400),
    Field("seeds", "installation", "str", "random", "seed per run: random, increment or fixed", choices=SEED_MODES),
    Field("loops", "installation", "int", 0, "playlist passes before stopping (0: forever)", 0, 10**9),
    Field("record", "installation", "str", "", "folder to record every run into (empty: no recording)"),
    Field("keep_runs", "installation", "int", 0, "--record keeps at most this many runs, deleting the oldest (0: any number)", 0, 10**9),
    Field("max_gb", "installation", "float", 0.0, "--record keeps at most this many GB of runs, deleting the oldest (0: any size)", 0, 10**6),
    # replay
    Field("recordings", "replay", "str", "", "replay: a recording folder or a folder of recordings"),
    Field("speed", "replay", "float", 1.0, "replay speed factor", L.speed.lo, L.speed.hi),
    Field("loop", "replay", "bool", True, "replay: start over at the end"),
    Field("shuffle", "replay", "bool", False, "replay: shuffle a folder of recordings"),
)

FIELD_BY_KEY = {f.key: f for f in FIELDS}
SECTIONS = tuple(dict.fromkeys(f.section for f in FIELDS if f.section))


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path | None
    values: dict  # key → value for every field (defaults filled in)

    @property
    def description(self) -> str:
        return self.values.get("description", "")


def defaults() -> dict:
    return {f.key: (list(f.default) if isinstance(f.default, list) else f.default) for f in FIELDS}


def is_preset_name(name) -> bool:
    return isinstance(name, str) and _PRESET_NAME.fullmatch(name) is not None


def list_presets(folder: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.toml") if is_preset_name(p.stem))


def switchable_presets(extra_dirs=()) -> list[str]:
    """Names a ``preset`` control may ask for: the presets folder's, then each extra folder's."""
    names: dict[str, None] = {}
    for folder in (PRESETS_DIR, *map(Path, extra_dirs)):
        names.update(dict.fromkeys(list_presets(folder)))
    return list(names)


def load_named_preset(name: str, extra_dirs=()) -> Preset:
    """The preset a control names: ``name`` must follow :data:`PRESET_NAME_RULE` and is looked
    up in the presets folder, then in ``extra_dirs`` (the operator's ``--preset-dir``)."""
    if not is_preset_name(name):
        raise PresetError(f"preset names are {PRESET_NAME_RULE}")
    for folder in (PRESETS_DIR, *map(Path, extra_dirs)):
        path = Path(folder) / f"{name}.toml"
        if path.is_file():
            try:
                return load_preset(name, folder)
            except PresetError as exc:  # the sender learns what is wrong, not where the server's files are
                raise PresetError(str(exc).replace(str(path), f"preset {name}")) from None
    names = switchable_presets(extra_dirs)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise PresetError(f"no preset named {name!r}{hint} (presets: {', '.join(names) or 'none'})")


def preset_path(name: str, folder: Path = PRESETS_DIR) -> Path:
    """A preset name (``live``) or a path to a .toml file → the file; PresetError if absent."""
    candidate = Path(name)
    if candidate.suffix == ".toml" or "/" in name or "\\" in name:
        if not candidate.is_file():
            raise PresetError(f"preset file {name} does not exist")
        return candidate
    path = Path(folder) / f"{name}.toml"
    if not path.is_file():
        names = list_presets(folder)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PresetError(f"no preset named {name!r}{hint} (presets: {', '.join(names) or 'none'})")
    return path


def load_preset(name: str = DEFAULT_PRESET, folder: Path = PRESETS_DIR) -> Preset:
    path = preset_path(name, folder)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
        if len(raw) > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: over {MAX_PRESET_BYTES >> 20} MiB, too large for a preset")
        data = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot be read ({exc})") from None
    values = defaults()
    values.update(parse_table(data, str(path)))
    check_consistency(values, str(path))
    return Preset(path.stem, path, values)


def parse_table(data: dict, where: str) -> dict:
    """Flatten and validate a parsed TOML document; raises PresetError naming ``where`` and the key."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise PresetError(f"{where}: unknown section [{key}]{_hint(key, SECTIONS)}")
            for sub, v in value.items():
                field = FIELD_BY_KEY.get(sub)
                if field is None or field.section != key:
                    known = [f.key for f in FIELDS if f.section == key]
                    elsewhere = f" ({sub} belongs in [{field.section}])" if field and field.section else ""
                    raise PresetError(f"{where}: unknown key {sub!r} in [{key}]{elsewhere or _hint(sub, known)}")
                out[sub] = check_value(field, v, where)
        else:
            field = FIELD_BY_KEY.get(key)
            if field is None or field.section:
                where_it_goes = f" (it belongs in [{field.section}])" if field else _hint(key, [f.key for f in FIELDS])
                raise PresetError(f"{where}: unknown top-level key {key!r}{where_it_goes}")
            out[key] = check_value(field, value, where)
    return out


def check_value(field: Field, value, where: str):
    """Type and range check of one value; returns it typed (ints accepted for floats)."""
    name = f"[{field.section}] {field.key}" if field.section else field.key
    expected = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
                "list": "a list of text"}[field.kind]
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[field.kind]
    if not ok:
        raise PresetError(f"{where}: {name} must be {expected}, got {value!r}")
    if field.kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise PresetError(f"{where}: {name} must be a finite number, got {value}")
    if field.kind in ("int", "float") and (
            (field.lo is not None and value < field.lo) or (field.hi is not None and value > field.hi)):
        raise PresetError(f"{where}: {name} must be within {_num(field.lo)}..{_num(field.hi)}, got {value}")
    if field.choices and value not in field.choices:
        raise PresetError(f"{where}: {name} must be one of {', '.join(field.choices)}, got {value!r}")
    return list(value) if field.kind == "list" else value


def check_consistency(values: dict, where: str) -> None:
    """Rules that involve several keys."""
    parts = values["noise"] + values["structure"] + values["detail"]
    if abs(parts - 1.0) > 1e-6:
        raise PresetError(f"{where}: [phases] noise + structure + detail must be 1, got {parts:g}")
    for key in ("width", "height"):  # 0 is the model's native size; else the table's range
        bound = getattr(L, key)
        if values[key] and values[key] not in bound:
            raise PresetError(f"{where}: [generation] {key} must be a multiple of {bound.multiple} from {bound.lo} "
                              f"to {bound.hi} (or 0), got {values[key]}")
    if values["mode"] == "installation" and not values["playlist"]:
        raise PresetError(f"{where}: installation mode needs a [installation] playlist of prompts")
    if values.get("regions"):
        from .regions import RegionError, from_text, parse_list

        try:
            parse_list(values["regions"], from_text)
        except RegionError as exc:
            raise PresetError(f"{where}: [generation] regions: {exc}") from None
    if values.get("concepts"):
        from .concepts import parse_concepts
        from .errors import InvalidRequest

        try:
            parse_concepts(values["concepts"])
        except InvalidRequest as exc:
            raise PresetError(f"{where}: [generation] concepts: {exc}") from None
    for folder in values.get("preset_dirs", ()):
        if not Path(folder).is_dir():
            raise PresetError(f"{where}: [server] preset_dirs names {folder}, which is not a folder")


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"  # 4294967295, not 4.29497e+09


def _hint(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


# --------------------------------------------------------------------------- command line


def add_preset_arguments(parser, sections=None) -> None:
    """Add ``--preset`` and one flag per field (all defaulting to "not given")."""
    import argparse

    names = list_presets()
    parser.add_argument("--preset", default=DEFAULT_PRESET, metavar="NAME",
                        help=f"preset name or .toml path (default {DEFAULT_PRESET}); presets: {', '.join(names)}")
    for section in ("", *SECTIONS):
        if sections is not None and section not in sections:
            continue
        fields = [f for f in FIELDS if f.section == section]
        group = parser.add_argument_group(f"[{section}] preset values" if section else "preset values")
        for f in fields:
            if f.key == "description":
                continue
            kw = dict(dest=f.key, default=argparse.SUPPRESS, help=f.help)
            flags = (f.option, *f.aliases)
            if f.kind == "bool":
                group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
            elif f.kind == "list":
                group.add_argument(*flags, action="append", metavar=f.key.upper(), **kw)
            else:
                typ = {"str": str, "int": int, "float": float}[f.kind]
                group.add_argument(*flags, type=typ, metavar=f.key.upper(),
                                   choices=list(f.choices) or None, **kw)
        if section == "phases":  # `render`'s spelling of the three fractions, in one flag
            group.add_argument("--phases", dest="phases", default=argparse.SUPPRESS, metavar="N,S,D",
                               help="noise,structure,detail fractions in one flag, like 0.2,0.4,0.4")


def apply_overrides(values: dict, args) -> dict:
    """Preset values with every flag the user gave on top, validated like the file."""
    out = dict(values)
    if hasattr(args, "phases"):
        given = [f"--phase-{k}" for k in PHASE_KEYS if hasattr(args, k)]
        if given:
            raise PresetError(f"give --phases or {', '.join(given)}, not both")
        out.update(zip(PHASE_KEYS, parse_phase_fractions(args.phases)))
    for f in FIELDS:
        if hasattr(args, f.key):
            out[f.key] = check_value(f, getattr(args, f.key), "command line")
    check_consistency(out, "command line")
    return out


PHASE_KEYS = ("noise", "structure", "detail")


def parse_phase_fractions(text: str) -> tuple[float, float, float]:
    """``"0.2,0.4,0.4"`` → (0.2, 0.4, 0.4): three fractions ≥ 0 summing to 1 (PresetError if not)."""
    try:
        parts = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise PresetError(f"--phases must be three fractions summing to 1, like 0.2,0.4,0.4, got {text!r}")
    return parts


def presets_epilog() -> str:
    lines = ["presets (presets/*.toml; --preset NAME, any value overridable by its flag):"]
    for name in list_presets():
        try:
            desc = load_preset(name).description
        except UserError as exc:
            desc = f"(invalid: {exc})"
        lines.append(f"  {name:<14}{desc}")
    return "\n".join(lines)
