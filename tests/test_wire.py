"""The wire format: round trips, the schema, and the hostile-bytes contract.

The contract (as h11 states its own): for ANY bytes, decode either returns a
ServerStats or raises ProtocolError, never anything else; and feeding the
same bytes whole, one byte at a time or in random splits gives the same answer.
"""

import contextlib
import gc
import json
import pathlib
import re
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from ltsp_lbcore import wire

SCHEMA = pathlib.Path(__file__).resolve().parent.parent / "docs" / "ltsp-server.rng"

FULL = wire.ServerStats(
    hostname="app1.school.lan",
    state="ready",
    weight=100,
    rating=23.5,
    sample_age_ms=120,
    sessions=12,
    capacity=64.0,
    cpu_count=8,
    cpu_mhz=2400.0,
    load_1min=1.25,
    load_5min=0.5,
    load_15min=0.25,
    mem_total_bytes=32 * 2**30,
    mem_available_bytes=20 * 2**30,
    swap_used_bytes=0,
    swapping=False,
    uptime_seconds=86400.5,
)
MINIMAL = wire.ServerStats(hostname="a", state="drain", weight=0, rating=0.0, sample_age_ms=0)
GOOD = wire.encode(FULL)


def outcome(feed):
    """What a decode attempt gave: ('ok', stats) or ('error', None)."""
    try:
        return ("ok", feed())
    except wire.ProtocolError:
        return ("error", None)


def decode_split(data, sizes):
    decoder = wire.Decoder()
    position = 0
    for size in sizes:
        decoder.feed(data[position : position + size])
        position += size
    decoder.feed(data[position:])
    return decoder.close()


def decode_bytewise(data):
    return decode_split(data, [1] * len(data))


@pytest.mark.parametrize("stats", [FULL, MINIMAL], ids=["full", "minimal"])
def test_round_trip(stats):
    assert wire.decode(wire.encode(stats)) == stats
    assert decode_bytewise(wire.encode(stats)) == stats


@pytest.mark.parametrize("stats", [FULL, MINIMAL], ids=["full", "minimal"])
def test_encoded_document_validates_against_schema(stats):
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    assert schema.validate(etree.fromstring(wire.encode(stats))), schema.error_log


def test_document_is_a_few_hundred_bytes():
    assert 200 < len(GOOD) < 1024


def test_unknown_elements_and_attributes_are_ignored():
    data = GOOD.replace(
        b"<state>",
        b'<gpu model="x"><vram-bytes>8</vram-bytes><nested><deeper/></nested></gpu><state extra="1">',
    )
    assert wire.decode(data) == FULL


def test_load_per_cpu():
    assert FULL.load_per_cpu == pytest.approx(1.25 / 8)
    assert MINIMAL.load_per_cpu is None


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -1, -0.5, 2**64],
    ids=["nan", "inf", "negative", "negative-float", "huge"],
)
def test_encode_refuses_what_decode_would_refuse(value):
    with pytest.raises(ValueError, match="rating"):
        wire.encode(FULL._replace(rating=value))


def test_encode_refuses_missing_required():
    with pytest.raises(ValueError, match="hostname is required"):
        wire.encode(FULL._replace(hostname=None))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ltsp-server version="1"><hostname>&lol3;</hostname></ltsp-server>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<ltsp-server version="1"><hostname>&secret;</hostname><state>ready</state>
<weight>1</weight><rating>1</rating><sample-age-ms>1</sample-age-ms></ltsp-server>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ltsp-server SYSTEM "http://198.18.0.1/evil.dtd">""" + GOOD.split(b"?>", 1)[1]
PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><ltsp-server version="1"/>"""

HOSTILE = {
    "empty": b"",
    "whitespace": b"   \n",
    "truncated": GOOD[: len(GOOD) // 2],
    "html": b"<html><body>It works!</body></html>",
    "plain-text": b"load 0.5\n",
    "json": b'{"rating": 5}',
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": EXTERNAL_ENTITY,
    "external-dtd": EXTERNAL_DTD,
    "parameter-entity": PARAMETER_ENTITY,
    "undefined-entity": GOOD.replace(b"app1.school.lan", b"&boom;"),
    "oversized": GOOD.replace(b"<state>", b"<pad>" + b"x" * wire.MAX_DOCUMENT_BYTES + b"</pad><state>"),
    "invalid-utf8": GOOD.replace(b"app1", b"app\xff\xfe"),
    "latin1-declared": b'<?xml version="1.0" encoding="ISO-8859-1"?>'
    + GOOD.split(b"?>", 1)[1].replace(b"app1", b"app\xe9"),
    "wrong-root": GOOD.replace(b"ltsp-server", b"ltsp-serverx"),
    "version-2": GOOD.replace(b'version="1"', b'version="2"'),
    "version-missing": GOOD.replace(b' version="1"', b""),
    "version-text": GOOD.replace(b'version="1"', b'version="one"'),
    "version-huge": GOOD.replace(b'version="1"', b'version="' + b"9" * 400 + b'"'),
    "nan": GOOD.replace(b"<rating>23.5", b"<rating>nan"),
    "inf": GOOD.replace(b"<rating>23.5", b"<rating>inf"),
    "negative": GOOD.replace(b"<sessions>12", b"<sessions>-12"),
    "exponent": GOOD.replace(b"<rating>23.5", b"<rating>1e400"),
    "huge-int": GOOD.replace(b"<sessions>12", b"<sessions>" + b"9" * 40),
    "float-for-int": GOOD.replace(b"<sessions>12", b"<sessions>12.5"),
    "underscore": GOOD.replace(b"<sessions>12", b"<sessions>1_2"),
    "unicode-digits": GOOD.replace(b"<sessions>12", "<sessions>١٢".encode()),
    "bad-state": GOOD.replace(b"<state>ready", b"<state>up"),
    "bad-bool": GOOD.replace(b"<swapping>false", b"<swapping>maybe"),
    "missing-rating": GOOD.replace(b"<rating>23.5</rating>", b""),
    "duplicate": GOOD.replace(b"<state>", b"<weight>5</weight><state>"),
    "child-in-value": GOOD.replace(b"<rating>23.5", b"<rating><b>23.5</b>"),
    "hostname-space": GOOD.replace(b"app1.school.lan", b"app1 evil"),
    "hostname-control": GOOD.replace(b"app1.school.lan", b"app1&#10;evil"),
    "hostname-long": GOOD.replace(b"app1.school.lan", b"a" * 300),
    "deep-nesting": GOOD.replace(b"<state>", b"<a>" * 50 + b"</a>" * 50 + b"<state>"),
    "many-elements": GOOD.replace(b"<state>", b"<u/>" * 1000 + b"<state>"),
    "trailing-garbage": GOOD + b"<more/>",
    "two-documents": GOOD + GOOD,
    "nul-bytes": b"\x00" * 100,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_document_is_refused_whole_and_split(name):
    data = HOSTILE[name]
    with pytest.raises(wire.ProtocolError):
        wire.decode(data)
    # Every byte, one at a time: the oversized case really feeds more than the cap.
    with pytest.raises(wire.ProtocolError):
        decode_bytewise(data)


def test_oversized_fed_byte_by_byte_is_refused_as_oversized():
    data = HOSTILE["oversized"]
    assert len(data) > wire.MAX_DOCUMENT_BYTES
    with pytest.raises(wire.ProtocolError, match="larger than"):
        decode_bytewise(data)


def test_oversized_is_refused_before_it_is_all_read():
    decoder = wire.Decoder()
    chunk = b"<ltsp-server version='1'>" + b" " * 4096
    with pytest.raises(wire.ProtocolError, match="larger than"):
        for _ in range(wire.MAX_DOCUMENT_BYTES // 4096 + 2):
            decoder.feed(chunk)


def test_wrong_root_is_refused_on_the_first_chunk():
    with pytest.raises(wire.ProtocolError, match="root element"):
        wire.Decoder().feed(b"<html>")


def test_doctype_is_refused_on_the_first_chunk():
    with pytest.raises(wire.ProtocolError, match="DTD"):
        wire.Decoder().feed(b'<?xml version="1.0"?><!DOCTYPE x [')


def test_error_messages_do_not_echo_long_input():
    data = GOOD.replace(b"<state>ready", b"<state>" + b"x" * 200)
    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode(data)
    assert len(str(caught.value)) < 300


def test_decode_refuses_non_bytes():
    with pytest.raises(wire.ProtocolError, match="expected bytes"):
        wire.decode("<ltsp-server/>")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_give_stats_or_protocol_error(data):
    assert outcome(lambda: wire.decode(data)) == outcome(lambda: decode_bytewise(data))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_documents_give_stats_or_protocol_error(data):
    position = data.draw(st.integers(0, len(GOOD) - 1))
    insert = data.draw(st.binary(max_size=16))
    cut = data.draw(st.integers(0, 8))
    mutated = GOOD[:position] + insert + GOOD[position + cut :]
    sizes = data.draw(st.lists(st.integers(1, 64), max_size=20))
    whole = outcome(lambda: wire.decode(mutated))
    assert whole == outcome(lambda: decode_split(mutated, sizes))
    if whole[0] == "ok":
        assert isinstance(whole[1], wire.ServerStats)


finite = st.floats(min_value=0, max_value=1e12, allow_nan=False)
count = st.integers(min_value=0, max_value=2**62)
optional = st.none


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        wire.ServerStats,
        hostname=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=60).filter(
            str.isprintable
        ),
        state=st.sampled_from(wire.STATES),
        weight=count,
        rating=finite,
        sample_age_ms=count,
        sessions=count | optional(),
        cpu_count=count | optional(),
        cpu_mhz=finite | optional(),
        load_1min=finite | optional(),
        mem_total_bytes=count | optional(),
        swapping=st.booleans() | optional(),
    )
)
def test_round_trip_any_valid_stats(stats):
    decoded = wire.decode(wire.encode(stats))
    # Floats travel with three decimals.
    for name, _element, codec, _required, _meaning in wire.FIELDS:
        sent, got = getattr(stats, name), getattr(decoded, name)
        if codec == "float" and sent is not None:
            assert got == pytest.approx(sent, abs=0.0006, rel=1e-9)
        else:
            assert got == sent


def test_protocol_doc_names_every_element():
    doc = (SCHEMA.parent / "PROTOCOL.md").read_text()
    schema = SCHEMA.read_text()
    for _name, element, *_rest in wire.FIELDS:
        assert f"`<{element}>`" in doc
        assert f'name="{element}"' in schema


def test_complete_turns_true_when_the_root_element_closes():
    decoder = wire.Decoder()
    cut = GOOD.index(b"</ltsp-server>")
    decoder.feed(GOOD[:cut])
    assert not decoder.complete
    decoder.feed(GOOD[cut : cut + 5])
    assert not decoder.complete
    decoder.feed(GOOD[cut + 5 :])
    assert decoder.complete
    assert decoder.close() == FULL


def test_a_nested_unknown_element_closing_does_not_complete():
    decoder = wire.Decoder().feed(b'<ltsp-server version="1"><future><x/></future>')
    assert not decoder.complete


# --- the same record as JSON (ltsp-loadbalancer's /v1/pool) ---


@pytest.mark.parametrize("stats", [FULL, MINIMAL], ids=["full", "minimal"])
def test_stats_round_trip_through_json(stats):
    assert wire.stats_from_json(json.loads(json.dumps(stats._asdict()))) == stats


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"rating": float("nan")}, "bad <rating>"),
        ({"rating": float("inf")}, "bad <rating>"),
        ({"rating": -1}, "bad <rating>"),
        ({"rating": "3"}, "<rating> has the wrong type: str"),
        ({"weight": 1.5}, "<weight> has the wrong type: float"),
        ({"weight": True}, "bad <weight>"),
        ({"state": "up"}, "bad <state>"),
        ({"hostname": "a b"}, "bad <hostname>"),
        ({"swapping": 1}, "<swapping> has the wrong type: int"),
        ({"rating": None}, "missing required element <rating>"),
    ],
)
def test_stats_from_json_claims_nothing_a_document_could_not(change, words):
    with pytest.raises(wire.ProtocolError, match=re.escape(words)):
        wire.stats_from_json({**FULL._asdict(), **change})


@pytest.mark.parametrize("record", [None, [], "stats", 3])
def test_stats_from_json_of_no_object_is_a_protocol_error(record):
    with pytest.raises(wire.ProtocolError, match="stats is not an object"):
        wire.stats_from_json(record)


def test_a_finished_decoder_lets_its_parser_go_without_the_garbage_collector():
    # A balancer polling 1,000 servers made 1,000 decoders a round; each one's expat
    # handlers pointed back at it, and the cycles waited for the GC (95-108 MiB).
    gc.disable()
    try:
        for data in (wire.encode(FULL), b"<html>"):
            decoder = wire.Decoder()
            gone = weakref.ref(decoder)
            with contextlib.suppress(wire.ProtocolError):
                decoder.feed(data).close()
            del decoder
            assert gone() is None
    finally:
        gc.enable()
