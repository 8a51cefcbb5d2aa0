"""The rules a setting's value must follow, and the one error every refusal raises.

A rule is a function of the value that returns None when the value works, or a short text saying
what would work. Each flag is declared once, with its rule (settings/dcgan.py and the others):

    g.add_argument("--ngf", type=int, default=32, rule=at_least(1), help="G width")

and experiment.start checks every flag's rule before anything is written (experiment/flags.py:
check_rules). The first value that does not work raises SettingsError, which names the flag, the
value and that text; the scripts print it as one line,

    error: --image-size 37: use a power of two, at least 16 (16, 32, 64, 128, 256, ...)

and stop with exit code 2. Rules that tie several settings together (a batch size that must be a
multiple of 4, a list whose length depends on the image size) are in each model's `check`.
"""
import math
import os

class SettingsError(ValueError):
    """A setting a model cannot work with: `name` (e.g. "image_size"), the value, what works."""

    def __init__(self, name, value, need):
        super().__init__(f"{flag(name)} {value}: {need}")
        self.name, self.value, self.need = name, value, need


def flag(name):
    """The command-line spelling of a setting: "image_size" -> "--image-size"."""
    return "--" + name.replace("_", "-")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- the rules ----------------------------------------------------------------------------------

def at_least(minimum):
    """A whole number >= minimum."""
    def rule(value):
        if not (_is_int(value) and value >= minimum):
            return f"use a whole number, at least {minimum}"
    return rule


def power_of_two(minimum):
    """A power of two >= minimum (architectures that halve or double the image at every level)."""
    def rule(value):
        if not (_is_int(value) and value >= minimum and value & (value - 1) == 0):
            examples = ", ".join(str(minimum * 2 ** k) for k in range(5))
            return f"use a power of two, at least {minimum} ({examples}, ...)"
    return rule


def above(low):
    """A finite number > low (learning rates, temperatures, half-lives)."""
    def rule(value):
        if not (_is_number(value) and value > low):
            return f"use a number above {low}"
    return rule


def number_at_least(low):
    """A finite number >= low (weights of a loss term, half-lives where 0 means "off")."""
    def rule(value):
        if not (_is_number(value) and value >= low):
            return f"use a number of at least {low}"
    return rule


def between(low, high, high_included=True):
    """A finite number from low to high (high itself only if high_included): probabilities,
    Adam's betas, label targets."""
    def rule(value):
        if not (_is_number(value) and low <= value and (value <= high if high_included
                                                        else value < high)):
            return (f"use a number from {low} to {high}" if high_included
                    else f"use a number from {low} up to (not including) {high}")
    return rule


def one_of(choices):
    """One of a few named values (e.g. ("none", "resolution"))."""
    def rule(value):
        if value not in choices:
            return f"use one of {', '.join(map(str, choices))}"
    return rule


def existing_file(hint):
    """The path of a file that exists; `hint` says which file would work."""
    def rule(value):
        if not os.path.isfile(str(value)):
            return f"no such file; {hint}"
    return rule


def optional(rule):
    """None (the flag's "not given") or a value that follows `rule`."""
    def optional_rule(value):
        return None if value is None else rule(value)
    return optional_rule


def whole_numbers(text, minimum=1):
    """A comma list of whole numbers ("16000,16000,12000") -> a list of ints, or None when it is
    malformed or a number is below `minimum`."""
    try:
        numbers = [int(part) for part in str(text).split(",")]
    except ValueError:
        return None
    return numbers if all(n >= minimum for n in numbers) else None
