"""The parameter mechanism every node uses: coercion, validation, settings, and the text of
launch arguments and command lines. (Declaring on a node: test_captioner_startup.py and
test_synthetic_camera.py.)"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

import pytest

from sharpeye_ros.ros.parameters import (ParamSpec, Settings, check, coerce, from_launch_arguments, from_text, index,
                                         ros_arguments, to_text, validate)

RATE = ParamSpec("rate", 2.0, "Hz", limits=(0.01, 100.0))
COUNT = ParamSpec("count", 3, "how many", limits=(0, 16))
MODE = ParamSpec("mode", "raw", "transport", choices=("raw", "compressed"))
FLAG = ParamSpec("flag", True, "on or off")
EVEN = ParamSpec("even", 0, "an even number", constraints="even", accept=lambda n: n % 2 == 0)
SPECS = index([RATE, COUNT, MODE, FLAG, EVEN])


def test_coerce_turns_integers_into_doubles_and_nothing_else():
    assert coerce(RATE, 5) == 5.0 and type(coerce(RATE, 5)) is float
    assert coerce(RATE, True) is True  # a bool is no number here: validation refuses it
    assert coerce(RATE, "5") == "5"
    assert coerce(COUNT, 5.0) == 5.0 and type(coerce(COUNT, 5.0)) is float  # no lossy int()
    assert coerce(MODE, "raw") == "raw"


@pytest.mark.parametrize("spec, value, reason", [
    (RATE, 2, "'rate' must be a double, got integer 2 (write 2.0)"),
    (RATE, float("inf"), "'rate' must be finite"),
    (RATE, 0.0, "'rate' must be in [0.01, 100], got 0.0"),
    (COUNT, True, "'count' must be a integer, got bool True"),
    (MODE, "h264", "'mode' must be one of raw, compressed; got 'h264'"),
    (FLAG, 1, "'flag' must be a bool, got integer 1"),
    (EVEN, 3, "'even' must be even; got 3"),
])
def test_check_gives_the_reason(spec, value, reason):
    assert reason in check(spec, value)


def test_validate_knows_only_its_specs():
    assert validate(SPECS, "rate", 1.0) is None and validate(SPECS, "even", 4) is None
    assert validate(SPECS, "speed", 1.0) == "unknown parameter 'speed'"


@dataclasses.dataclass(frozen=True)
class Demo(Settings):
    SPECS: ClassVar[Mapping[str, ParamSpec]] = SPECS
    rate: float = RATE.default
    count: int = COUNT.default
    mode: str = MODE.default
    flag: bool = FLAG.default
    even: int = EVEN.default


def test_settings_are_built_only_through_validation():
    assert Demo.from_values({}) == Demo()
    changed = Demo().updated({"rate": 5.0, "mode": "compressed"})
    assert (changed.rate, changed.mode, changed.count) == (5.0, "compressed", 3)
    with pytest.raises(ValueError, match="'count' must be in"):
        Demo.from_values({"rate": 5.0, "count": 99})
    with pytest.raises(ValueError, match="unknown parameter 'speed'"):
        Demo().updated({"speed": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.rate = 1.0  # type: ignore[misc]


def test_settings_fields_must_be_the_parameters():
    with pytest.raises(TypeError, match="are not the parameters"):
        @dataclasses.dataclass(frozen=True)
        class Missing(Settings):  # noqa: F841
            SPECS: ClassVar[Mapping[str, ParamSpec]] = SPECS
            rate: float = RATE.default


@pytest.mark.parametrize("spec, text, value", [
    (RATE, "1", 1.0), (RATE, "2.5", 2.5), (RATE, "1e-1", 0.1), (COUNT, "7", 7), (FLAG, "false", False),
    (FLAG, "True", True), (MODE, "compressed", "compressed"), (EVEN, "4", 4),
])
def test_from_text_reads_launch_arguments_as_the_node_would(spec, text, value):
    result = from_text(spec, text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize("spec, text, reason", [
    (RATE, "fast", "'rate' must be a double, got string 'fast'"),
    (RATE, "0", "'rate' must be in [0.01, 100], got 0.0"),
    (RATE, "nan", "'rate' must be finite"),
    (COUNT, "2.5", "'count' must be a integer, got double 2.5"),
    (MODE, "h264", "'mode' must be one of raw, compressed"),
])
def test_from_text_refuses_what_the_node_would_refuse(spec, text, reason):
    with pytest.raises(ValueError) as info:
        from_text(spec, text)
    assert reason in str(info.value)


def test_to_text_writes_values_that_read_back_as_their_type():
    assert to_text(RATE, 2) == "2.0" and to_text(RATE, 0.5) == "0.5"
    assert to_text(FLAG, False) == "false" and to_text(COUNT, 3) == "3" and to_text(MODE, "raw") == "raw"
    for spec, value in ((RATE, 2.0), (RATE, 0.0125), (RATE, 1e-2), (COUNT, 16), (FLAG, True), (MODE, "compressed")):
        assert from_text(spec, to_text(spec, value)) == value
    assert ros_arguments(SPECS, {"rate": 3, "flag": False}) == ["-p", "rate:=3.0", "-p", "flag:=false"]


def test_launch_arguments_are_typed_checked_and_empty_means_not_given():
    assert from_launch_arguments(SPECS, {"rate": "1", "mode": "", "flag": "false"}) == {"rate": 1.0, "flag": False}
    with pytest.raises(ValueError, match=r"launch argument rate: parameter 'rate' must be in \[0.01, 100\]"):
        from_launch_arguments(SPECS, {"rate": "500"})
