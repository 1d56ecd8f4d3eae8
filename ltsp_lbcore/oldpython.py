"""What Python 3.6 lacks, for the code that runs on thin clients.

LDM ships in Ubuntu 18.04 (python3 3.6), Debian 10 (3.7) and Ubuntu 20.04
(3.8): get_hosts and this core run there. Two things they use appeared in
3.7, and this module is their one stand-in: namedtuple's ``defaults=`` and
``str.isascii()``.
"""

from collections import namedtuple


def record(typename, field_names, defaults=()):
    """collections.namedtuple(typename, field_names, defaults=defaults), on 3.6 too.

    The defaults apply to the last fields, as namedtuple's own do.
    """
    cls = namedtuple(typename, field_names)
    if defaults:
        cls.__new__.__defaults__ = tuple(defaults)
    return cls


def is_ascii(text):
    """str.isascii() (3.7+): True when every character is below U+0080, and for ''."""
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True
