"""Viewer links and bearer tokens."""

from __future__ import annotations

import hashlib

import pytest
from gateway.auth import Principal, TokenVerifier, bearer_token, token_hash
from gateway.settings import ApiToken, Settings
from gateway.viewer import ViewerLinks, orthanc_study_id


def test_orthanc_study_id_is_orthancs() -> None:
    # Observed on Orthanc 1.10.1: PatientID B0077 and this StudyInstanceUID give this study id.
    uid = "1.2.826.0.1.3680043.10.1338.617471619365503617232316303768985400"
    assert orthanc_study_id("B0077", uid) == "0d67ffbb-07b2d36c-239b4af8-711bb226-0f39ffb5"


def test_templates() -> None:
    meddream = ViewerLinks("https://meddream.example.org/meddream/?study={study_instance_uid}")
    assert meddream.url("1.2.3", None) == "https://meddream.example.org/meddream/?study=1.2.3"
    explorer = ViewerLinks("http://v/app/explorer.html#study?uuid={orthanc_study_id}&p={patient_id}")
    assert explorer.url("1.2.3", None) is None
    assert (
        explorer.url("1.2.3", "A B")
        == f"http://v/app/explorer.html#study?uuid={orthanc_study_id('A B', '1.2.3')}&p=A%20B"
    )
    with pytest.raises(ValueError, match="unknown placeholder"):
        ViewerLinks("http://v/{nope}")


def tokens() -> list[ApiToken]:
    return [
        ApiToken(name="dcc-demo", role="dcc", sha256=token_hash("demo-dcc-token")),
        ApiToken(name="viewer-demo", role="viewer", sha256=token_hash("demo-viewer-token").upper()),
    ]


def test_token_verification() -> None:
    verifier = TokenVerifier(tokens())
    assert verifier.verify("demo-dcc-token") == Principal("dcc-demo", "dcc")
    assert verifier.verify("demo-viewer-token") == Principal("viewer-demo", "viewer")
    for wrong in (None, "", "demo-dcc-token ", "DEMO-DCC-TOKEN", "x" * 10_000, "é\udcff"):
        assert verifier.verify(wrong) is None
    assert TokenVerifier([]).verify("demo-dcc-token") is None


def test_roles() -> None:
    assert Principal("a", "dcc").rights() == ("read", "settings", "enrol", "select", "audit")
    assert Principal("a", "viewer").rights() == ("read",)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"t").hexdigest()
    monkeypatch.setenv("PROXYMAGE_API_TOKENS", f'[{{"name": "n", "role": "viewer", "sha256": "{digest}"}}]')
    monkeypatch.setenv("PROXYMAGE_PUBLIC_URL", "https://proxymage.example.org")
    assert Settings().api_tokens == (ApiToken(name="n", role="viewer", sha256=digest),)


def test_the_public_url_is_required_for_the_built_in_viewers_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXYMAGE_PUBLIC_URL", raising=False)
    with pytest.raises(ValueError, match="PROXYMAGE_PUBLIC_URL"):
        Settings()
    # A site with its own viewer needs no public URL of the gateway.
    own = Settings(viewer_url_template="https://meddream.example.org/meddream/?study={study_instance_uid}")
    assert own.public_url is None
