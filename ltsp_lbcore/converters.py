"""Converters both config tables use: get_hosts' LB_* variables and the balancer's keys (and its request fields).

A converter takes the value's text and returns the value, or raises
``Invalid`` naming what the value is not, as a noun phrase: the services'
config errors read ``(expected WHAT)`` (str of the error), get_hosts'
``'x' is not WHAT`` (``is_not``). One definition of a boolean, a load
limit and a number of milliseconds, so LB_SKIP_SWAPPING and SKIP_SWAPPING,
LB_MAX_LOAD and MAX_LOAD accept the same words.

Cheap to import, and Python 3.6 (the thin client imports it at every login).
"""

from ltsp_lbcore.numbers import is_plain_decimal, is_plain_whole


class Invalid(ValueError):
    """A value that is not WHAT (a noun phrase, e.g. 'a boolean (true/false, yes/no, y/n, 1/0)')."""

    def __init__(self, what):
        super().__init__("expected " + what)
        self.what = what


def is_not(error):
    """get_hosts' words for a converter's ValueError: 'is not WHAT', or the message as it is."""
    what = getattr(error, "what", None)
    return str(error) if what is None else "is not " + what


BOOLEANS = {"true": True, "y": True, "yes": True, "1": True, "false": False, "n": False, "no": False, "0": False}


def boolean(text):
    """LTSP booleans, any case: true/false, yes/no, y/n, 1/0 -> True or False."""
    try:
        return BOOLEANS[text.strip().lower()]
    except KeyError:
        raise Invalid("a boolean (true/false, yes/no, y/n, 1/0)") from None


# An hour: longer than any login would wait, and within what poll() takes
# (a C int of milliseconds; 10**10 overflowed it).
MAX_MILLISECONDS = 3600000


def milliseconds(text):
    """A whole number of milliseconds, 1 to MAX_MILLISECONDS."""
    digits = text.strip()
    if not is_plain_whole(digits):
        raise Invalid("a whole number of milliseconds")
    value = int(digits)
    if value < 1:
        raise Invalid("a positive number of milliseconds")
    if value > MAX_MILLISECONDS:
        raise Invalid(f"a number of milliseconds up to {MAX_MILLISECONDS} (an hour)")
    return value


def optional_milliseconds(text):
    """Milliseconds, or None (no limit) for 'none' in any case."""
    return None if text.strip().lower() == "none" else milliseconds(text)


def optional_load(text):
    """A load average per CPU (a non-negative decimal), or None (no limit) for 'none' in any case."""
    value = text.strip()
    if value.lower() == "none":
        return None
    if not is_plain_decimal(value):
        raise Invalid("a load average per CPU (a decimal number such as 1.5), or none")
    return float(value)
