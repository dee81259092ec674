"""The MSSanté address rule shared by the gateway (at entry) and the expert-notifier (at sending time)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared.events import Expert
from proxymage_shared.mssante import (
    DEFAULT_ALLOWED_DOMAINS,
    SecureMailDomains,
    address_allowed,
    address_pattern,
    domain_allowed,
    recipient_domain,
)
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("jeanne.fictive@chu-fictif.mssante.fr", True),
        ("Jeanne.Fictive@CHU-FICTIF.MSSANTE.FR", True),
        ("  radio@a.b.mssante.fr  ", True),
        ("radio@chu.mssante.fr.", True),
        ("jeanne.fictive@gmail.com", False),
        ("radio@mssante.fr", False),  # the bare domain is no operator's
        ("radio@xmssante.fr", False),
        ("radio@mssante.fr.evil.example", False),
        ("radio@chu.mssante.fr@evil.example", False),
        ("@chu.mssante.fr", False),
        ("radio@", False),
        ("radio", False),
        ("radio@chu..mssante.fr", False),
        ("", False),
    ],
)
def test_only_mssante_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(address, DEFAULT_ALLOWED_DOMAINS) is allowed


def test_an_exact_domain_matches_only_itself() -> None:
    assert address_allowed("a@mssante.fr", ("mssante.fr",))
    assert not address_allowed("a@chu.mssante.fr", ("mssante.fr",))
    assert domain_allowed("CHU.MSSANTE.TEST.", ("*.mssante.test",))
    assert not domain_allowed("chu.mssante.test", ())


def test_the_domain_is_lowercased_without_its_trailing_dot() -> None:
    assert recipient_domain("A@Chu.MSSante.FR.") == "chu.mssante.fr"
    assert recipient_domain("a@localhost") is None


def test_the_allowed_domains_come_from_the_smtp_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="PROXYMAGE_", env_nested_delimiter="__", extra="ignore")
        smtp: SecureMailDomains = SecureMailDomains()

    assert Settings().smtp.allowed_domains == ("*.mssante.fr",)
    monkeypatch.setenv("PROXYMAGE_SMTP__ALLOWED_DOMAINS", '["*.mssante.fr", "*.mssante.test"]')
    monkeypatch.setenv("PROXYMAGE_SMTP__HOST", "relay.example.test")  # the notifier's: ignored here
    assert Settings().smtp.allowed_domains == ("*.mssante.fr", "*.mssante.test")
    with pytest.raises(ValidationError):
        SecureMailDomains(allowed_domains=())


@pytest.mark.parametrize(
    "address",
    [
        "jeanne.fictive@chu-fictif.mssante.fr",
        "Jeanne@CHU.MSSANTE.FR.",
        "a@b.c.mssante.test",
        "a@mssante.fr",
        "a@xmssante.fr",
        "a@mssante.fr.evil.example",
        "a@.mssante.fr",
        "a@chu..mssante.fr",
        "a@gmail.com",
        "a@b@chu.mssante.fr",
    ],
)
def test_the_openapi_pattern_says_the_same(address: str) -> None:
    domains = ("*.mssante.fr", "*.mssante.test")
    assert (re.fullmatch(address_pattern(domains), address) is not None) is address_allowed(address, domains)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"[a-z]{1,5}@(?:[a-zA-Z.-]{0,6}\.)?(?:mssante|MSSante|xmssante)\.(?:fr|test|com)\.?", fullmatch=True)
)
def test_the_openapi_pattern_agrees_with_the_rule(address: str) -> None:
    domains = ("*.mssante.fr", "ExAmple.test")
    assert (re.fullmatch(address_pattern(domains), address) is not None) is address_allowed(address, domains)
    assert re.fullmatch(address_pattern(()), address) is None


ODD = st.sampled_from(["\x85", "\x1c", "\x1f", "\ufeff", "\u00a0", " ", "\t", "<", "@", ".", "é", "ſ", "K"])


@settings(max_examples=500, deadline=None)
@given(
    st.text(st.one_of(st.characters(codec="utf-8"), ODD), min_size=0, max_size=6),
    st.text(st.one_of(st.characters(codec="utf-8"), ODD), min_size=0, max_size=6),
    st.sampled_from(["mssante.fr", "MSSante.Fr.", "mssante.test", "xmssante.fr", "mssante.fr.evil", ""]),
)
def test_the_openapi_pattern_is_the_contracts_pattern_and_the_rule(local: str, label: str, suffix: str) -> None:
    """Whatever the characters (pydantic's, Python's and ECMA-262's `\\s` differ), the document's pattern admits
    exactly the addresses the server admits: the contract's EmailAddress and the MSSanté rule."""
    domains = ("*.mssante.fr", "*.mssante.test")
    address = f"{local}@{label}.{suffix}"
    try:
        Expert(name="Dr FICTIF", email=address)
    except ValidationError:
        contract = False
    else:
        contract = True
    server = contract and address_allowed(address, domains)
    assert (re.fullmatch(address_pattern(domains), address) is not None) is server
