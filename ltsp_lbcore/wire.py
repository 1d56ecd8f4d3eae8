"""The wire format: one server's load, as the XML document on port 377.

Everything that decides what the bytes on the wire look like lives here, and
nothing else does: no sockets, no psutil, no configuration. The daemon calls
encode(); get_hosts feeds what it reads to a Decoder (or calls decode()).

The contract of the reading side, whatever the bytes: either it returns a
ServerStats, or it raises ProtocolError. Never anything else, never an entity
expanded, never a file or URL opened, never more than MAX_DOCUMENT_BYTES held.

This module ships with the thin-client package and must import fast: only
expat (a C module) and collections, no typing, dataclasses or re.
"""

from xml.parsers import expat

from ltsp_lbcore.numbers import is_plain_decimal
from ltsp_lbcore.oldpython import is_ascii, record
from ltsp_lbcore.states import ADMIN_STATES

PROTOCOL_VERSION = 1
ROOT_ELEMENT = "ltsp-server"
# A real document is about 700 bytes; anything far larger is hostile.
MAX_DOCUMENT_BYTES = 16 * 1024
# Unknown elements may nest (a future version may add structure), but not
# without bound: expat keeps a stack per level.
MAX_DEPTH = 8
MAX_ELEMENTS = 256
MAX_TEXT_CHARS = 255
# Larger than any real machine (16 EiB, a thousand years of uptime) but small
# enough that arithmetic on it stays exact and finite.
MAX_NUMBER = 2**63
# A failing check's reason: one line an admin reads in --status and on the page.
MAX_REASON_CHARS = 200

STATES = ADMIN_STATES


class ProtocolError(ValueError):
    """The bytes are not a document this version understands."""


# --- value converters: text on the wire <-> Python value ------------------


def _check_number_text(text):
    if not text:
        raise ValueError("empty number")
    if text[0] == "-":
        raise ValueError(f"negative number {text!r}")
    # Only plain decimals: no exponent, nan, inf, underscores or spaces.
    if not is_plain_decimal(text, max_digits=len(text)):
        raise ValueError(f"not a plain decimal number {text!r}")


def _int_from_text(text):
    _check_number_text(text)
    if not text.isdigit():
        raise ValueError(f"not a whole number {text!r}")
    if len(text) > 19 or int(text) > MAX_NUMBER:
        raise ValueError(f"number too large {text!r}")
    return int(text)


def _float_from_text(text):
    _check_number_text(text)
    if len(text) > 32:
        raise ValueError(f"number too long {text!r}")
    value = float(text)
    if value > MAX_NUMBER:
        raise ValueError(f"number too large {text!r}")
    return value


def _int_to_text(value):
    value = int(value)
    if not 0 <= value <= MAX_NUMBER:
        raise ValueError(f"out of range (got {value})")
    return str(value)


def _float_to_text(value):
    value = float(value)
    if not 0.0 <= value <= MAX_NUMBER:  # also rejects NaN
        raise ValueError(f"out of range (got {value})")
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _bool_from_text(text):
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"not true or false {text!r}")


def _bool_to_text(value):
    return "true" if value else "false"


def _name_from_text(text):
    if not text or len(text) > 253:
        raise ValueError(f"host name length {len(text)}")
    if not text.isprintable() or " " in text:
        raise ValueError(f"host name {text!r} has blanks or control characters")
    return text


def _reason_from_text(text):
    # One line of plain text for an admin: a check's reason, never markup.
    if not text or len(text) > MAX_REASON_CHARS:
        raise ValueError(f"reason length {len(text)}")
    if not text.isprintable():
        raise ValueError(f"reason {text[:40]!r} has control characters")
    return text


def _state_from_text(text):
    if text not in STATES:
        raise ValueError(f"unknown state {text!r}")
    return text


_CODECS = {
    "name": (_name_from_text, _name_from_text),
    "state": (_state_from_text, _state_from_text),
    "reason": (_reason_from_text, _reason_from_text),
    "int": (_int_from_text, _int_to_text),
    "float": (_float_from_text, _float_to_text),
    "bool": (_bool_from_text, _bool_to_text),
}

# One row per element: (attribute, element, codec, required, meaning).
# docs/PROTOCOL.md and docs/ltsp-server.rng describe the same table; a
# test checks they agree.
FIELDS = (
    ("hostname", "hostname", "name", True, "the server's host name"),
    ("state", "state", "state", True, "ready, drain or maint"),
    ("weight", "weight", "int", True, "relative capacity, 100 is normal"),
    ("rating", "rating", "float", True, "sessions it can still take"),
    ("sample_age_ms", "sample-age-ms", "int", True, "age of the sample, ms"),
    ("sessions", "sessions", "int", False, "user sessions now"),
    ("capacity", "capacity", "float", False, "sessions it can hold in all"),
    ("cpu_count", "cpu-count", "int", False, "logical CPUs"),
    ("cpu_mhz", "cpu-mhz", "float", False, "CPU speed, MHz"),
    ("load_1min", "load-1min", "float", False, "load average, 1 minute"),
    ("load_5min", "load-5min", "float", False, "load average, 5 minutes"),
    ("load_15min", "load-15min", "float", False, "load average, 15 minutes"),
    ("mem_total_bytes", "mem-total-bytes", "int", False, "memory, bytes"),
    ("mem_available_bytes", "mem-available-bytes", "int", False, "bytes"),
    ("swap_used_bytes", "swap-used-bytes", "int", False, "swap in use, bytes"),
    ("swapping", "swapping", "bool", False, "paging to or from swap now"),
    ("uptime_seconds", "uptime-seconds", "float", False, "since boot, s"),
    ("failing", "failing", "reason", False, "present when the login service fails its check: why"),
)
FIELD_NAMES = tuple(row[0] for row in FIELDS)
_REQUIRED = tuple(row[0] for row in FIELDS if row[3])
_BY_ELEMENT = {row[1]: row for row in FIELDS}


class ServerStats(record("ServerStats", FIELD_NAMES, defaults=(None,) * (len(FIELDS) - len(_REQUIRED)))):
    """One server's advertised load; optional metrics are None when unknown.

    Units are in the names: bytes, ms, seconds, MHz. load_* are the kernel's
    load averages (runnable tasks, not per CPU); rating is spare capacity in
    sessions the server can still take and capacity the sessions it can hold
    in all, both with the admin's weight applied (rating <= capacity).
    failing is None while the login service passes the daemon's checks, else
    the one-line reason it does not (and rating is then 0).
    """

    __slots__ = ()

    @property
    def load_per_cpu(self):
        """1-minute load average divided by CPU count, or None."""
        if self.load_1min is None or not self.cpu_count:
            return None
        return self.load_1min / self.cpu_count


# --- encoding --------------------------------------------------------------


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def encode(stats):
    """ServerStats -> the UTF-8 document. ValueError on a value decode would reject."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<{ROOT_ELEMENT} version="{PROTOCOL_VERSION}">']
    for attribute, element, codec, required, _meaning in FIELDS:
        value = getattr(stats, attribute)
        if value is None:
            if required:
                raise ValueError(f"{attribute} is required")
            continue
        try:
            text = _CODECS[codec][1](value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{attribute}: {error}") from None
        lines.append(f"  <{element}>{_escape(text)}</{element}>")
    lines.append(f"</{ROOT_ELEMENT}>\n")
    return "\n".join(lines).encode("utf-8")


# --- decoding --------------------------------------------------------------


class _Refused(Exception):
    """Raised inside expat callbacks; turned into ProtocolError by feed()."""


class _Spent:
    """Stands in for the parser of a finished Decoder: any further input is an error."""

    @staticmethod
    def Parse(data, final):  # expat's name
        raise _Refused("data after the end of the document")


class Decoder:
    """Incremental reader: feed() chunks as they arrive, then close().

    Fails as early as the bytes allow (a wrong root element or a DOCTYPE is
    refused on the chunk that carries it), so a hostile server costs the
    reader nothing more than the bytes already read. ``complete`` turns true
    on the chunk that closes the root element: the reader need not wait for
    the server to close the connection.
    """

    def __init__(self):
        self._size = 0
        self._depth = 0
        self._elements = 0
        self._version_seen = False
        self._current = None  # the known element whose text we collect
        self._text = []
        self._values = {}
        self._done = False
        self.complete = False  # the root element has closed: close() may be called now
        parser = expat.ParserCreate(encoding="UTF-8")
        # Refuse DTDs outright: no entity, internal or external, is ever
        # declared, so none can be expanded or fetched.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse_doctype
        parser.EntityDeclHandler = self._refuse_doctype
        parser.ExternalEntityRefHandler = self._refuse_doctype
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._characters
        self._parser = parser

    def feed(self, data):
        """Parse another chunk of bytes. Raises ProtocolError as soon as it can."""
        if self._done:
            raise ProtocolError("data after the end of the document")
        self._size += len(data)
        if self._size > MAX_DOCUMENT_BYTES:
            raise ProtocolError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
        self._parse(bytes(data), False)
        return self

    def close(self):
        """End of input: return the ServerStats or raise ProtocolError."""
        if not self._done:
            self._done = True
            self._parse(b"", True)
        if not self._version_seen:
            raise ProtocolError("empty document")
        missing = [name for name in _REQUIRED if name not in self._values]
        if missing:
            raise ProtocolError(f"missing element {missing[0]!r}")
        return ServerStats(**self._values)

    def _parse(self, data, final):
        try:
            self._parser.Parse(data, final)
        except _Refused as error:
            self._release()
            raise ProtocolError(str(error)) from None
        except expat.ExpatError as error:
            self._release()
            raise ProtocolError(f"not well-formed XML: {expat.ErrorString(error.code)}") from None
        except (RecursionError, MemoryError, UnicodeError, ValueError) as error:
            self._release()
            raise ProtocolError(f"unreadable document: {type(error).__name__}") from None
        if final:
            self._release()

    def _release(self):
        """Let the expat parser go now: its handlers point back here, and a cycle waits for the
        garbage collector (a balancer polling 1,000 servers would hold 1,000 parsers a round)."""
        self._done = True
        self._parser = _Spent

    def _refuse_doctype(self, *_args):
        raise _Refused("DTDs and entity declarations are not allowed")

    def _start(self, name, attributes):
        self._depth += 1
        self._elements += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}")
        if self._elements > MAX_ELEMENTS:
            raise _Refused(f"more than {MAX_ELEMENTS} elements")
        if self._depth == 1:
            self._start_root(name, attributes)
        elif self._current is not None:
            raise _Refused(f"element <{name}> inside <{self._current[1]}>")
        elif self._depth == 2 and name in _BY_ELEMENT:
            if _BY_ELEMENT[name][0] in self._values:
                raise _Refused(f"element <{name}> given twice")
            self._current = _BY_ELEMENT[name]
            self._text = []
        # Anything else is an element of a later compatible version: ignored.

    def _start_root(self, name, attributes):
        if name != ROOT_ELEMENT:
            raise _Refused(f"root element is <{name[:40]}>, not <{ROOT_ELEMENT}>")
        version = attributes.get("version", "")
        if not (is_ascii(version) and version.isdigit() and len(version) < 6):
            raise _Refused(f"protocol version {version[:20]!r} is not a whole number")
        if int(version) != PROTOCOL_VERSION:
            raise _Refused(f"unsupported protocol version {int(version)} (this reader speaks {PROTOCOL_VERSION})")
        self._version_seen = True

    def _end(self, name):
        if self._depth == 1:
            self.complete = True
        if self._current is not None and self._depth == 2:
            attribute, element, codec, _required, _meaning = self._current
            self._current = None
            text = "".join(self._text).strip()
            try:
                self._values[attribute] = _CODECS[codec][0](text)
            except ValueError as error:
                raise _Refused(f"<{element}>: {error}") from None
        self._depth -= 1

    def _characters(self, data):
        if self._current is not None:
            self._text.append(data)
            if sum(map(len, self._text)) > MAX_TEXT_CHARS:
                raise _Refused(f"<{self._current[1]}> longer than {MAX_TEXT_CHARS} characters")


def decode(data):
    """The whole document's bytes -> ServerStats, or ProtocolError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    return Decoder().feed(data).close()


# --- the same record as JSON (ltsp-loadbalancer's /v1/pool) -------------------------


def stats_from_json(record):
    """ServerStats from a /v1/pool row's "stats" object (a dict), checked as strictly as a document.

    Each value goes through the element's own codec as the text a document
    would carry, so the balancer's JSON can claim nothing the daemon's XML
    could not. Raises ProtocolError for anything else.
    """
    if not isinstance(record, dict):
        raise ProtocolError("stats is not an object")
    values = {}
    for attribute, element, codec, required, _meaning in FIELDS:
        value = record.get(attribute)
        if value is None:
            if required:
                raise ProtocolError(f"missing required element <{element}>")
            continue
        if isinstance(value, bool):
            text = _bool_to_text(value) if codec == "bool" else "?"
        elif (codec == "int" and isinstance(value, int)) or (codec == "float" and isinstance(value, (int, float))):
            try:
                text = _CODECS[codec][1](value)  # as the daemon's encoder writes it
            except (ValueError, OverflowError):
                text = "?"
        elif isinstance(value, str) and codec in ("name", "state", "reason"):
            text = value
        else:
            raise ProtocolError(f"<{element}> has the wrong type: {type(value).__name__}")
        try:
            values[attribute] = _CODECS[codec][0](text)
        except ValueError as error:
            raise ProtocolError(f"bad <{element}>: {error}") from None
    return ServerStats(**values)
