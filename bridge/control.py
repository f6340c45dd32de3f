"""Control messages, validated once for both transports (websocket JSON and OSC).

A control arrives as a JSON object (``{"type": "prompt", "prompt": "..."}``) or an OSC message
(``/daam/prompt "..."``).  Both become a :class:`Control` whose values are already checked and
typed, or raise :class:`ControlError` with one sentence that names the field and the problem —
that sentence goes back to the sender as is.  The table of controls is in docs/PROTOCOL.md.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from .errors import InvalidRequest
from .limits import LIMITS, Bound, Limits
from .presets import PRESET_NAME_RULE, is_preset_name
from .protocol import ProtocolError, Subscription
from .wiretext import ECHO_CHARS, quote


class ControlError(InvalidRequest):
    """A control message that cannot be applied; ``code`` is sent along for programs."""

    def __init__(self, message: str, code: str = "invalid_value"):
        super().__init__(message)
        self.code = code


# Bounds live in bridge/limits.py, the one table every door reads.
DEFAULT_LIMITS = LIMITS

# Settings a run is made from; `set` and `prompt` may carry any of them.
SETTING_NAMES = ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height")
# Controls with no value.
ACTIONS = ("pause", "resume", "cancel", "status", "next")
KINDS = ("prompt", "set", "select", "preset", "subscribe", "speed", "regions", "concepts", *ACTIONS)
MAX_SPEED = LIMITS.speed.hi  # replay speed factor bounds (speed → {"speed": float})
MIN_SPEED = LIMITS.speed.lo


@dataclass(frozen=True)
class Control:
    """One validated control: ``kind`` is one of :data:`KINDS`; ``values`` depends on it.

    prompt/set → settings dict (subset of :data:`SETTING_NAMES`); select → {"word": int|str};
    preset → {"name": str}; subscribe → {"subscription": dict of given fields};
    regions → {"regions": tuple of bridge.regions.Region}; concepts → {"concepts": tuple of str};
    actions → {}.
    """

    kind: str
    values: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- value checks


def _text(name: str, value, limits: Limits, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise ControlError(f"{name} must be text, got {_kind(value)}")
    text = " ".join(value.split())  # newlines/tabs from a text field become spaces
    if not text and not allow_empty:
        raise ControlError(f"{name} is empty; send some words to generate from")
    words = len(text.split())
    if words > limits.prompt_words:
        raise ControlError(f"{name} has {words} words; the limit is {limits.prompt_words}")
    if len(text) > limits.prompt_chars:
        raise ControlError(f"{name} has {len(text)} characters; the limit is {limits.prompt_chars}")
    return text


def _int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise ControlError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ControlError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ControlError(f"{name} must be a whole number, got {_kind(value)}")
    if not lo <= value <= hi:
        raise ControlError(f"{name} must be within {lo}..{hi}, got {value}")
    return value


def _float(name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{name} must be a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ControlError(f"{name} must be a finite number, got {value}")
    if not lo <= value <= hi:
        raise ControlError(f"{name} must be within {lo:g}..{hi:g}, got {value:g}")
    return value


def _size(name: str, value, bound: Bound) -> int:
    v = _int(name, value, bound.lo, bound.hi)
    if v % bound.multiple:
        raise ControlError(f"{name} must be a multiple of {bound.multiple} (the latent grid), got {v}")
    return v


def _kind(value) -> str:
    return {str: "text", bool: "true/false", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null", bytes: "binary data"}.get(type(value), type(value).__name__)


def check_setting(name: str, value, limits: Limits = DEFAULT_LIMITS):
    """Validate one setting by name; returns the typed value."""
    if name == "prompt":
        return _text("prompt", value, limits, allow_empty=False)
    if name == "negative_prompt":
        return _text("negative_prompt", value, limits, allow_empty=True)
    if name in ("seed", "steps"):
        bound = getattr(limits, name)
        return _int(name, value, bound.lo, bound.hi)
    if name == "guidance":
        return _float("guidance", value, limits.guidance.lo, limits.guidance.hi)
    if name in ("width", "height"):
        return _size(name, value, getattr(limits, name))
    raise ControlError(f"unknown setting {name!r}; known: {', '.join(SETTING_NAMES)}", "unknown_field")


def _settings(msg: dict, limits: Limits, kind: str) -> dict:
    out = {}
    for key, value in msg.items():
        if key == "type":
            continue
        if key == "size":  # convenience: "size": [w, h]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ControlError("size must be [width, height]")
            out["width"], out["height"] = _size("width", value[0], limits.width), _size("height", value[1], limits.height)
            continue
        if key not in SETTING_NAMES:
            raise ControlError(_unknown(f"{kind} field", key, (*SETTING_NAMES, "size")), "unknown_field")
        out[key] = check_setting(key, value, limits)
    if kind == "prompt" and "prompt" not in out:
        raise ControlError('a prompt message needs a "prompt" field with the text to generate')
    if kind == "set" and not out:
        raise ControlError(f"set needs at least one of {', '.join(SETTING_NAMES)}")
    return out


def _unknown(what: str, name, known) -> str:
    close = difflib.get_close_matches(str(name)[:ECHO_CHARS], list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return f"unknown {what} {quote(name)}{hint}"


def _select(value) -> dict:
    if isinstance(value, str):
        word = value.strip()
        if not word or len(word) > 200:
            raise ControlError("select needs a word index or a word of the prompt")
        return {"word": word}
    return {"word": _int("word", value, LIMITS.word.lo, LIMITS.word.hi)}


def _preset(value) -> dict:
    if not isinstance(value, str) or not value.strip():
        raise ControlError("preset needs a preset name from the presets folder, like installation")
    name = value.strip()
    if not is_preset_name(name):
        raise ControlError(f"preset names are {PRESET_NAME_RULE}, got {quote(name)}", "unknown_preset")
    return {"name": name}


# --------------------------------------------------------------------------- transports


def _json_settings(kind: str):
    return lambda msg, limits: Control(kind, _settings(msg, limits, kind))


def _json_select(msg: dict, limits: Limits) -> Control:
    if "word" not in msg:
        raise ControlError('select needs a "word": an index or a word of the prompt')
    return Control("select", _select(msg["word"]))


def _json_preset(msg: dict, limits: Limits) -> Control:
    return Control("preset", _preset(msg.get("name")))


def _json_subscribe(msg: dict, limits: Limits) -> Control:
    try:
        Subscription.from_dict(msg)  # validate now, apply on top of the client's current one
    except ProtocolError as exc:
        raise ControlError(str(exc)) from None
    return Control("subscribe", {"subscription": {k: v for k, v in msg.items() if k != "type"}})


def _json_speed(msg: dict, limits: Limits) -> Control:
    if "speed" not in msg:
        raise ControlError('speed needs a "speed": the replay speed factor, e.g. 2 for twice as fast')
    return Control("speed", {"speed": _speed(msg["speed"], limits)})


def _json_regions(msg: dict, limits: Limits) -> Control:
    from .regions import RegionError, from_dict, parse_list

    if "regions" not in msg:
        raise ControlError('regions needs a "regions" list, like [{"box": [20, 20, 40, 40]}] (empty: none)')
    try:
        return Control("regions", {"regions": parse_list(msg["regions"], from_dict)})
    except RegionError as exc:
        raise ControlError(str(exc)) from None


def _osc_regions(address: str, args: list) -> Control:
    from .regions import RegionError, from_text, parse_list

    try:
        return Control("regions", {"regions": parse_list(list(args), from_text)})
    except RegionError as exc:
        raise ControlError(f"{address}: {exc}", "bad_arguments") from None


def _concepts(values, where: str) -> Control:
    from .concepts import parse_concepts
    from .errors import InvalidRequest

    try:
        return Control("concepts", {"concepts": parse_concepts(values)})
    except InvalidRequest as exc:
        raise ControlError(f"{where}{exc}", "bad_arguments" if where else "invalid_value") from None


def _json_concepts(msg: dict, limits: Limits) -> Control:
    if "concepts" not in msg:
        raise ControlError('concepts needs a "concepts" list, like ["sky", "circle", "background"] (empty: none)')
    return _concepts(msg["concepts"], "")


def _osc_concepts(address: str, args: list) -> Control:
    """Any number of text arguments, each one concept or several separated by commas; none clears."""
    if not all(isinstance(a, str) for a in args):
        raise ControlError(f"{address} takes concept names as text, like \"sky, circle\"", "bad_arguments")
    return _concepts([c for a in args for c in a.split(",")], f"{address}: ")


def _speed(value, limits: Limits) -> float:
    return _float("speed", value, limits.speed.lo, limits.speed.hi)


# JSON "type" → parser(message, limits) → Control
JSON_PARSERS = {
    "prompt": _json_settings("prompt"),
    "set": _json_settings("set"),
    "select": _json_select,
    "preset": _json_preset,
    "subscribe": _json_subscribe,
    "speed": _json_speed,
    "regions": _json_regions,
    "concepts": _json_concepts,
    **{a: (lambda kind: lambda msg, limits: Control(kind))(a) for a in ACTIONS},
}


def parse_json_control(msg: dict, limits: Limits = DEFAULT_LIMITS) -> Control:
    """A decoded JSON control message → :class:`Control` (raises :class:`ControlError`)."""
    kind = msg.get("type")
    parser = JSON_PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ControlError(_unknown("message type", kind, KINDS), "unknown_type")
    return parser(msg, limits)


# OSC address (after the prefix) → (kind, setting name or None)
OSC_CONTROLS = {
    "/prompt": ("prompt", "prompt"),
    "/negative_prompt": ("set", "negative_prompt"),
    "/seed": ("set", "seed"),
    "/steps": ("set", "steps"),
    "/guidance": ("set", "guidance"),
    "/size": ("set", "size"),
    "/select": ("select", None),
    "/preset": ("preset", None),
    "/speed": ("speed", None),
    "/regions": ("regions", None),
    "/concepts": ("concepts", None),
    **{f"/{a}": (a, None) for a in ACTIONS},
}


def parse_osc_control(address: str, args: list, prefix: str = "/daam", limits: Limits = DEFAULT_LIMITS) -> Control | None:
    """An OSC message → :class:`Control`, or None for a button release (an action sent with 0).

    TouchDesigner buttons send 1 on press and 0 on release, so actions accept no argument or
    one number and ignore the release.
    """
    if not address.startswith(prefix + "/"):
        raise ControlError(f"OSC address {quote(address)} is outside {prefix}/", "unknown_address")
    tail = address[len(prefix):]
    if tail not in OSC_CONTROLS:
        close = difflib.get_close_matches(tail, list(OSC_CONTROLS), n=1, cutoff=0.7)  # the prefix would make all look alike
        hint = f"; did you mean {prefix + close[0]!r}?" if close else f"; known: {', '.join(prefix + k for k in OSC_CONTROLS)}"
        raise ControlError(f"unknown OSC address {quote(address)}{hint}", "unknown_address")
    kind, name = OSC_CONTROLS[tail]
    if kind in ACTIONS:
        if len(args) > 1 or (args and (isinstance(args[0], bool) or not isinstance(args[0], (int, float)))):
            raise ControlError(f"{address} takes no argument or one number (a button value)", "bad_arguments")
        if args and args[0] == 0:
            return None
        return Control(kind)
    if kind == "regions":  # any number of text regions, none clears them
        return _osc_regions(address, args)
    if kind == "concepts":
        return _osc_concepts(address, args)
    if name == "size":
        if len(args) != 2:
            raise ControlError(f"{address} takes two numbers (width, height), got {len(args)} argument(s)", "bad_arguments")
        return Control("set", _settings({"size": list(args)}, limits, "set"))
    if len(args) != 1:
        raise ControlError(f"{address} takes exactly one argument, got {len(args)}", "bad_arguments")
    return OSC_PARSERS[kind](name, args[0], limits)


# OSC control kind → parser(setting name, the one argument, limits) → Control
OSC_PARSERS = {
    "prompt": lambda name, value, limits: Control("prompt", _settings({name: value}, limits, "prompt")),
    "set": lambda name, value, limits: Control("set", _settings({name: value}, limits, "set")),
    "select": lambda name, value, limits: Control("select", _select(value)),
    "speed": lambda name, value, limits: Control("speed", {"speed": _speed(value, limits)}),
    "preset": lambda name, value, limits: Control("preset", _preset(value)),
}
