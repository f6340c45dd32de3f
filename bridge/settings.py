"""Typed settings: preset values as one frozen object with an attribute per field.

:data:`bridge.presets.FIELDS` stays the one schema: :class:`Settings` is generated from it, so
a field added there is an attribute here, with the same default.  Preset files and flags are
read and checked by :mod:`bridge.presets` as before; sessions take the result as ``Settings``
and read ``settings.steps`` instead of ``values["steps"]`` (a typo is an AttributeError at
once, not a KeyError in the middle of a show).

    settings = Settings.of(apply_overrides(preset.values, args))
    settings.osc_out, settings.phases()            # typed reads
    settings.replace(steps=30)                    # a new object; the old one is unchanged
"""

from __future__ import annotations

import dataclasses

from .presets import FIELDS

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": tuple}


def _field(f):
    default = tuple(f.default) if isinstance(f.default, list) else f.default
    typ = _TYPES[f.kind] if f.default is not None else _TYPES[f.kind] | None
    return f.key, typ, dataclasses.field(default=default)


class _SettingsMethods:
    @classmethod
    def of(cls, values) -> "Settings":
        """Settings from a dict of preset values (missing keys take their defaults) or as is.
        Lists become tuples, so a Settings can be shared across threads unchanged."""
        if isinstance(values, cls):
            return values
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **changes) -> "Settings":
        return type(self).of({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """The preset-values dict (lists as lists), as :mod:`bridge.presets` makes it."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def phases(self):
        from .phases import PhaseSchedule

        return PhaseSchedule(self.noise, self.structure, self.detail, self.blend)

    def query_regions(self) -> tuple:
        """The ``regions`` texts as :class:`bridge.regions.Region` (validated with the preset)."""
        from .regions import from_text, parse_list

        return parse_list(list(self.regions), from_text)


Settings = dataclasses.make_dataclass("Settings", [_field(f) for f in FIELDS], bases=(_SettingsMethods,), frozen=True)
Settings.__module__ = __name__
Settings.__doc__ = "Every preset value, typed; generated from bridge.presets.FIELDS."
