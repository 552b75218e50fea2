"""Names in every script (protocol v1.1, section 2): validation, identity and look-alikes."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.core import protocol
from chatcli.core.names import (
    MAX_NAME,
    alike_key,
    name_error,
    name_key,
    name_keys,
    normalize,
    valid_name,
)
from chatcli.errors import ProtocolError


def clash(a: str, b: str) -> bool:
    """What the relay refuses: two names with either key equal."""
    return any(x == y for x, y in zip(name_keys(a), name_keys(b), strict=True))


@pytest.mark.parametrize(
    "name",
    [
        "José",
        "田中さん",
        "Алиса",
        "élise",
        "Ωμέγα",
        "김민준",
        "王小明",
        "ひらがな",
        "नमस्ते",
        "ab_c-d.e",
    ],
)
def test_names_of_other_scripts_are_accepted(name: str) -> None:
    assert name_error(name) is None, name_error(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("аlice", "script"),  # Cyrillic а, Latin lice
        ("pаypal", "script"),
        ("Aлиса", "script"),
        ("al ice", "letter"),
        ("a\u200bb", "invisible"),  # zero width space
        ("a\u202eb", "invisible"),  # right-to-left override
        ("a\u00adb", "invisible"),  # soft hyphen
        ("\u3164", "invisible"),  # Hangul filler looks like nothing
        ("\u0301a", "combining"),
        ("a\u0301\u0302\u0303\u0304\u0305", "combining"),  # zalgo
        ("Ωmega", "script"),  # Greek and Latin
        ("a1١", "digits"),  # ASCII and Arabic-Indic digits mixed
        ("x" * (MAX_NAME + 1), "1-24"),
        ("", "1-24"),
        ("bob\n", "letter"),
        ("server", "reserved"),
        ("SYSTEM", "reserved"),
        ("ｓｅｒｖｅｒ", "reserved"),  # full width
        ("sеrver", "script"),  # Cyrillic е
    ],
)
def test_names_breaking_a_rule_are_refused_and_say_why(name: str, why: str) -> None:
    problem = name_error(name)
    assert problem is not None and why in problem


def test_the_protocol_module_reexports_the_one_name_rule() -> None:
    assert protocol.valid_name is valid_name and protocol.name_key is name_key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "Alice"),
        ("alice", "ALICE"),
        ("alice", "ａｌｉｃｅ"),  # full width
        ("alice", "аlice"),  # refused anyway, and a look-alike of alice
        ("coco", "сосо"),  # all Cyrillic: a valid name, and the same as coco
        ("paypal", "pаypal"),
        ("paypal", "paypaI"),  # capital I: TS #39 maps it to l before any case fold
        ("l", "I"),
        ("rn", "m"),
        ("José", "JOSÉ"),
        ("José", "Jose\u0301"),  # decomposed
    ],
)
def test_look_alikes_are_one_name(a: str, b: str) -> None:
    assert clash(a, b)


@pytest.mark.parametrize(("a", "b"), [("alice", "bob"), ("ian", "lan"), ("José", "Jose")])
def test_different_names_do_not_clash(a: str, b: str) -> None:
    assert not clash(a, b)


def test_coco_in_cyrillic_is_valid_but_taken_by_coco() -> None:
    assert valid_name("сосо") and name_key("сосо") == name_key("coco")


def test_a_name_is_kept_in_its_nfkc_form() -> None:
    assert normalize("ａｌｉｃｅ") == "alice"
    assert normalize("Jose\u0301") == "José"


# ------------------------------------------------------------------------ fuzzing

_LETTERS = st.characters(categories=["L", "N", "M", "Cf", "Cc", "Zs", "P", "S"])
_NAMES = st.text(_LETTERS, min_size=0, max_size=30)
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


@settings(max_examples=400, deadline=None)
@given(_NAMES)
def test_normalisation_and_keys_are_idempotent(name: str) -> None:
    once = normalize(name)
    assert normalize(once) == once
    assert name_key(once) == name_key(name)
    assert alike_key(once) == alike_key(name)
    if valid_name(name):
        assert valid_name(once)


@settings(max_examples=400, deadline=None)
@given(_NAMES)
def test_no_valid_name_holds_a_control_format_or_bidi_character(name: str) -> None:
    if not valid_name(name):
        return
    shown = normalize(name)
    assert 1 <= len(shown) <= MAX_NAME
    for char in shown:
        assert unicodedata.category(char) not in _FORBIDDEN_CATEGORIES, hex(ord(char))
        assert unicodedata.bidirectional(char) not in {"LRE", "RLE", "LRO", "RLO", "PDF"}
        assert unicodedata.bidirectional(char) not in {"LRI", "RLI", "FSI", "PDI"}


@settings(max_examples=300, deadline=None)
@given(_NAMES, _NAMES)
def test_equal_keys_always_clash_in_the_relay(a: str, b: str) -> None:
    from chatcli.core.relay import Relay

    if not (valid_name(a) and valid_name(b)) or not clash(a, b):
        return
    relay = Relay(rate_limit=0)
    first, second = relay.open("a"), relay.open("b")
    relay.login(first, protocol.Hello(name=a))
    with pytest.raises(ProtocolError) as info:
        relay.login(second, protocol.Hello(name=b))
    assert info.value.code == "name_taken"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["alice", "paypal", "coco", "bob", "tanaka"]), st.data())
def test_case_and_width_variants_clash(base: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    wide = data.draw(st.booleans())
    variant = "".join(c.upper() if f else c for c, f in zip(base, flips, strict=True))
    if wide:
        variant = "".join(chr(ord(c) + 0xFEE0) for c in variant)  # full-width forms
    assert name_key(variant) == name_key(base)
