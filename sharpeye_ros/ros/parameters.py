"""Node parameters, one way for every node of the package: declared, coerced and validated.

A node lists its parameters as :class:`ParamSpec` (name, default, description, range or
choices, read-only) and keeps their values in a frozen dataclass derived from
:class:`Settings`, one field per spec. Then:

- :func:`declare` declares every spec on the node, with a ``ParameterDescriptor`` made from
  it (description, read-only, range, constraints: what ``ros2 param describe`` shows), and
  returns the values that the overrides (command line, params file, launch) gave;
- building the settings (:meth:`Settings.from_values`, :meth:`Settings.updated`) is the one
  validation: a bad value raises ValueError with the reason;
- :func:`coerce` is the one type fix-up: an integer for a double parameter;
- :func:`watch` takes changes at run time: :func:`coerce` before rclpy's type check, then a
  callback that builds the new settings and answers with the reason when it refuses them;
- :func:`from_launch_arguments` (:func:`from_text`) and :func:`ros_arguments` carry values
  to a node from launch arguments and onto command lines.

Pure Python: the functions that need a node import rclpy themselves.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, TypeVar

S = TypeVar("S", bound="Settings")

_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}
_TYPE_HINTS = {bool: "bool: true or false", int: "whole number", float: "decimal number, e.g. 2.0",
               str: "string"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter; its type is its default's.

    ``limits``: inclusive (low, high) of a number, also published as the descriptor's range
    (which rclpy enforces); ``choices``: the allowed strings; ``constraints`` with
    ``accept``: any other rule, in words (the descriptor's ``additional_constraints``, and
    the reason when ``accept(value)`` is false). ``read_only``: fixed at start-up.
    ``dynamic_typing``: rclpy takes any type at start-up, so that a double takes an integer
    (``rate:=5``) before :func:`coerce` and validation; statically typed ones refuse it.
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    limits: Optional[tuple[float, float]] = None
    choices: Optional[tuple[str, ...]] = None
    constraints: str = ""
    accept: Optional[Callable[[Any], bool]] = None
    dynamic_typing: bool = False


def index(specs: Iterable[ParamSpec]) -> dict[str, ParamSpec]:
    """name -> spec."""
    return {spec.name: spec for spec in specs}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def coerce(spec: ParamSpec, value: Any) -> Any:
    """``value`` in the type of ``spec``'s default where nothing is lost: an integer for a
    double parameter (``ros2 param set /captioner max_rate 5`` means 5.0). Anything else
    comes back as it is, for validation to refuse with a reason."""
    if type(spec.default) is float and type(value) is int:  # exact: bool is an int subclass
        return float(value)
    return value


def check(spec: ParamSpec, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for ``spec``, or None when it is."""
    name, expected = spec.name, type(spec.default)
    if type(value) is not expected:  # exact: bool is an int subclass, but not a valid int here
        hint = f" (write {float(value)!r})" if expected is float and type(value) is int else ""
        return f"parameter '{name}' must be a {_type_name(spec.default)}, got {_type_name(value)} {value!r}{hint}"
    if expected is float and not math.isfinite(value):
        return f"parameter '{name}' must be finite, got {value!r}"
    if spec.limits is not None and not spec.limits[0] <= value <= spec.limits[1]:
        low, high = spec.limits
        return f"parameter '{name}' must be in [{low:g}, {high:g}], got {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"parameter '{name}' must be one of {', '.join(spec.choices)}; got {value!r}"
    if spec.accept is not None and not spec.accept(value):
        return f"parameter '{name}' must be {spec.constraints}; got {value!r}"
    return None


def validate(specs: Mapping[str, ParamSpec], name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for parameter ``name`` of ``specs``, or None when it is."""
    spec = specs.get(name)
    if spec is None:
        return f"unknown parameter '{name}'"
    return check(spec, value)


class Settings:
    """Base of a node's settings: a frozen dataclass with one field per spec of ``SPECS``
    (defaulting to the spec's default), built and changed only through validation."""

    SPECS: ClassVar[Mapping[str, ParamSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = {name for name in cls.__dict__.get("__annotations__", {}) if name != "SPECS"}
        if fields != set(cls.SPECS):
            raise TypeError(f"{cls.__name__}: fields {sorted(fields)} are not the parameters {sorted(cls.SPECS)}")

    @classmethod
    def from_values(cls: type[S], values: Mapping[str, Any]) -> S:
        """Settings from a full or partial name -> value mapping (missing: defaults)."""
        return cls().updated(values)

    def updated(self: S, changes: Mapping[str, Any]) -> S:
        """A copy with ``changes`` applied; ValueError naming the first invalid one."""
        for name, value in changes.items():
            reason = validate(self.SPECS, name, value)
            if reason is not None:
                raise ValueError(reason)
        return dataclasses.replace(self, **dict(changes))  # type: ignore[type-var]


def descriptor(spec: ParamSpec) -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of ``spec``."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    out = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                              dynamic_typing=spec.dynamic_typing)
    if spec.choices:
        out.additional_constraints = "one of: " + ", ".join(spec.choices)
    elif spec.constraints:
        out.additional_constraints = spec.constraints
    if spec.limits is not None and isinstance(spec.default, float):
        out.floating_point_range = [FloatingPointRange(
            from_value=float(spec.limits[0]), to_value=float(spec.limits[1]), step=0.0)]
    elif spec.limits is not None:
        out.integer_range = [IntegerRange(from_value=int(spec.limits[0]), to_value=int(spec.limits[1]), step=1)]
    return out


def declare(node: Any, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` (an rclpy Node, lifecycle nodes included) and return
    name -> value as its overrides set them, coerced. ValueError naming the parameter when
    rclpy refuses an override (a wrong type, out of range), with the type to write."""
    from rclpy.exceptions import InvalidParameterTypeException, ParameterException

    values = {}
    for spec in specs:
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
        except ParameterException as err:  # rclpy's own type and range checks
            wrong_type = isinstance(err, InvalidParameterTypeException)
            hint = f" (write a {_TYPE_HINTS[type(spec.default)]})" if wrong_type else ""
            raise ValueError(f"parameter '{spec.name}' rejected: {err}{hint}") from None
        values[spec.name] = coerce(spec, value)
    return values


def watch(node: Any, specs: Mapping[str, ParamSpec], apply: Callable[[dict[str, Any]], Optional[str]]) -> None:
    """Take run-time changes of ``specs`` on ``node``: :func:`coerce` before rclpy's type
    check (its pre-set callback, Jazzy and newer; Humble refuses an integer for a double),
    then ``apply(changes)`` with the changed values of these parameters (others, such as
    use_sim_time, are rclpy's business). ``apply`` builds the new settings and returns the
    reason to refuse them, or None to accept them."""
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.parameter import Parameter

    def coerce_all(params: list[Parameter]) -> list[Parameter]:
        out = []
        for p in params:
            value = coerce(specs[p.name], p.value) if p.name in specs else p.value
            out.append(p if value is p.value else Parameter(p.name, value=value))
        return out

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in specs}
        reason = apply(changes) if changes else None
        return SetParametersResult(successful=reason is None, reason=reason or "")

    if hasattr(node, "add_pre_set_parameters_callback"):
        node.add_pre_set_parameters_callback(coerce_all)
    node.add_on_set_parameters_callback(on_set)


def _scalar(text: str) -> Any:
    """``text`` read as ROS reads ``-p name:=text``: a bool, an integer, a double or the text."""
    word = text.strip()
    if word in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return word.lower() == "true"
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return text


def from_text(spec: ParamSpec, text: str) -> Any:
    """The value that ``text`` (a launch argument) gives parameter ``spec``: read as ROS
    reads ``-p name:=text`` (a string parameter keeps the text), then coerced. ValueError
    with the node's reason when the node would refuse it."""
    value = coerce(spec, text if isinstance(spec.default, str) else _scalar(text))
    reason = check(spec, value)
    if reason is not None:
        raise ValueError(reason)
    return value


def from_launch_arguments(specs: Mapping[str, ParamSpec], texts: Mapping[str, str]) -> dict[str, Any]:
    """Parameter values from launch arguments named after the parameters: each one given
    (empty: not given, the params file or the node's default applies) read and checked by
    :func:`from_text`, so that ``max_rate:=1`` reaches the node as the double 1.0 and a bad
    value stops the launch before anything starts; ValueError naming the argument."""
    values = {}
    for name, text in texts.items():
        if text:
            try:
                values[name] = from_text(specs[name], text)
            except ValueError as err:
                raise ValueError(f"launch argument {name}: {err}") from None
    return values


def to_text(spec: ParamSpec, value: Any) -> str:
    """``value`` of ``spec`` as a command line writes it (``-p name:=<text>``): coerced, so
    that a double always reads back as one ("2.0", never "2"), bools as true/false."""
    value = coerce(spec, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def ros_arguments(specs: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> list[str]:
    """``-p name:=text`` arguments (after ``--ros-args``) that give a node ``values``."""
    arguments: list[str] = []
    for name, value in values.items():
        arguments += ["-p", f"{name}:={to_text(specs[name], value)}"]
    return arguments


__all__ = ["ParamSpec", "Settings", "index", "coerce", "check", "validate", "descriptor", "declare", "watch",
           "from_text", "from_launch_arguments", "to_text", "ros_arguments"]
