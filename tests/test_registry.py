"""A Registry: names in registration order, an unknown name is one ConfigError with a "did you
mean", and its table is the README's."""

from __future__ import annotations

import pytest

from dlrun.errors import ConfigError
from dlrun.registry import Registry


def _colors() -> Registry[str]:
    colors: Registry[str] = Registry("color")
    colors.add("red", "#f00", "the colour of blood")

    @colors.register("green", doc="the colour of grass")
    def green() -> str:
        return "#0f0"

    return colors


def test_names_in_order_and_lookup() -> None:
    colors = _colors()
    assert colors.names() == ("red", "green") and list(colors) == ["red", "green"]
    assert colors["red"] == "#f00" and colors["green"]() == "#0f0"
    assert "red" in colors and "blue" not in colors and len(colors) == 2


def test_an_unknown_name_says_what_is_known() -> None:
    with pytest.raises(ConfigError, match="unknown color 'gren'; did you mean 'green'\\?; "
                                          "expected one of red, green"):
        _colors()["gren"]


def test_a_name_is_registered_once_and_a_copy_is_separate() -> None:
    colors = _colors()
    with pytest.raises(ValueError, match="registered twice"):
        colors.add("red", "#e00", "again")
    copy = colors.copy()
    copy.add("blue", "#00f", "the colour of the sky")
    assert "blue" in copy and "blue" not in colors


def test_markdown_table() -> None:
    assert _colors().markdown("paint") == ("| paint | what it is |\n|---|---|\n"
                                           "| `red` | the colour of blood |\n"
                                           "| `green` | the colour of grass |\n")
