"""Exceptions raised by rl_isac.

Every error names the offending value and the rule it breaks, so that a user
reading only the message knows what to change.
"""

from __future__ import annotations


class RlIsacError(ValueError):
    """Base class of every error raised on bad input by rl_isac."""


class ConfigError(RlIsacError):
    """A configuration field holds a value that breaks a rule.

    Attributes:
        field: name of the offending field (dotted for nested values).
        value: the offending value.
        rule: the rule it breaks, in words.
    """

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"invalid config field {field}={value!r}: {rule}")

    def __reduce__(self):
        # copy/pickle (Ray ships exceptions between processes) rebuild from the three fields.
        return (type(self), (self.field, self.value, self.rule))


class ConstraintViolation(RlIsacError):
    """An association or beam set breaks one of the paper's constraints (5c)-(5f).

    Attributes:
        constraint: the constraint label, e.g. ``"(5c)"``.
    """

    def __init__(self, constraint: str, message: str) -> None:
        self.constraint = constraint
        self.message = message
        super().__init__(f"constraint {constraint} violated: {message}")

    def __reduce__(self):
        return (type(self), (self.constraint, self.message))


class MeasurementError(RlIsacError):
    """A measurement array is malformed (wrong shape, NaN where detected, ...)."""
