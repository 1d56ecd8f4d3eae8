"""Plain decimal numbers as admins write them, and as the wire carries them.

int() and float() accept far more than a config file or a document should
mean: '+1', ' 1', '1_0', '١', 'nan', 'inf', '1e3', 10**5000. Every reader of
numbers in the project asks these two questions first.
"""

from ltsp_lbcore.oldpython import is_ascii


def is_plain_whole(text, max_digits=18):
    """True for ASCII digits only, at most MAX_DIGITS of them (no sign, no blanks)."""
    return 0 < len(text) <= max_digits and is_ascii(text) and text.isdigit()


def is_plain_decimal(text, max_digits=18):
    """True for ASCII digits with at most one '.', e.g. '1', '1.5', '.5', '2.'."""
    digits = text.replace(".", "", 1)
    return 0 < len(digits) <= max_digits and is_ascii(digits) and digits.isdigit()
