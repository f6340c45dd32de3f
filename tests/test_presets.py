"""Presets: every shipped preset loads; mistakes name the file and the key; flags override."""

from __future__ import annotations

import argparse

import pytest

from bridge.presets import (
    FIELDS,
    PresetError,
    add_preset_arguments,
    apply_overrides,
    list_presets,
    load_preset,
    presets_epilog,
)


def test_shipped_presets_load_and_cover_the_uses():
    names = list_presets()
    assert {"live", "installation", "timelapse", "showcase"} <= set(names)
    for name in names:
        preset = load_preset(name)
        assert preset.description, f"{name} has no description"
    assert load_preset("live").values["mode"] == "vj"
    inst = load_preset("installation").values
    assert inst["mode"] == "installation" and len(inst["playlist"]) >= 2 and inst["loops"] == 0
    assert load_preset("timelapse").values["record"] and load_preset("timelapse").values["vae_every"] == 1
    assert load_preset("showcase").values["recordings"]


def _write(tmp_path, text: str):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ("[generation]\nstepz = 3\n", "unknown key 'stepz' in [generation]; did you mean 'steps'?"),
    ("[generaton]\nsteps = 3\n", "unknown section [generaton]; did you mean 'generation'?"),
    ("[server]\nsteps = 3\n", "steps belongs in [generation]"),
    ("steps = 3\n", "it belongs in [generation]"),
    ("[generation]\nsteps = \"twenty\"\n", "[generation] steps must be a whole number, got 'twenty'"),
    ("[generation]\nsteps = 0\n", "[generation] steps must be within 1..1000, got 0"),
    ("[generation]\nguidance = nan\n", "guidance must be a finite number"),
    ("[generation]\nwidth = 100\n", "width must be a multiple of 8"),
    ("[generation]\nautostart = 1\n", "autostart must be true or false"),
    ("[osc]\nosc_out = \"127.0.0.1:7000\"\n", "osc_out must be a list of text"),
    ("mode = \"party\"\n", "mode must be one of vj, installation"),
    ("mode = \"installation\"\n", "needs a [installation] playlist"),
    ("[phases]\nnoise = 0.5\n", "noise + structure + detail must be 1"),
    ("[generation\n", "not valid TOML"),
])
def test_mistakes_name_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert message in str(info.value) and path in str(info.value)


def test_unknown_preset_name_suggests_the_closest():
    with pytest.raises(PresetError, match="did you mean 'installation'"):
        load_preset("instalation")


def test_command_line_flags_override_preset_values():
    parser = argparse.ArgumentParser()
    add_preset_arguments(parser)
    args = parser.parse_args(["--preset", "installation", "--steps", "7", "--osc-out", "127.0.0.1:9000",
                              "--osc-out", "10.0.0.2:9001", "--no-loop", "--playlist", "a cat", "--phase-noise", "0.3",
                              "--phase-structure", "0.3"])
    preset = load_preset(args.preset)
    values = apply_overrides(preset.values, args)
    assert values["steps"] == 7 and preset.values["steps"] == 30
    assert values["osc_out"] == ["127.0.0.1:9000", "10.0.0.2:9001"]
    assert values["playlist"] == ["a cat"] and values["loop"] is False
    assert values["noise"] == 0.3 and values["pause"] == preset.values["pause"]  # untouched keys keep the preset's
    bad = parser.parse_args(["--steps", "0"])
    with pytest.raises(PresetError, match="command line: .generation. steps must be within 1..1000"):
        apply_overrides(load_preset("live").values, bad)


def test_every_field_has_a_flag_and_help():
    parser = argparse.ArgumentParser()
    add_preset_arguments(parser)
    text = parser.format_help()
    for f in FIELDS:
        if f.key != "description":
            assert f.option in text, f.key
    assert "live" in presets_epilog() and "installation" in presets_epilog()
