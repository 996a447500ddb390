"""The token layer: source order, re-reading files, claims, expiry, refresh grants, 401 retry."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import pytest

from nbplugins import files, secrets, tokens
from nbplugins.config import TokenConfig
from nbplugins.errors import AuthError, TokenError, TokenExpiredError
from nbplugins.http import HttpClient
from nbplugins.retry import Retry
from tests import bounded
from tests.servers import oidc
from tests.servers.authcheck import AuthCheckServer


def refresh_cfg(issuer: str, refresh_token: str, **kw) -> TokenConfig:
    return TokenConfig(issuer=issuer, client_id="nbplugins", client_secret="client-secret-value",
                       refresh_token=refresh_token, **kw)


def test_env_token_wins_over_files_and_claims_are_decoded(monkeypatch, tmp_path, make_jwt):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="env-user", vos=("vo.a.eu", "vo.b.eu")))
    path = tmp_path / "t"
    path.write_text(make_jwt(sub="file-user"))
    tok = tokens.TokenResolver(TokenConfig(file=str(path))).get()
    assert tok.source == "environment variable OIDC_ACCESS_TOKEN"
    assert tok.claims.subject == "env-user"
    assert tok.claims.vos == ("vo.a.eu", "vo.b.eu")
    assert tok.claims.issuer == "https://aai.egi.eu/auth/realms/egi"
    assert str(tok) == "<token from environment variable OIDC_ACCESS_TOKEN>"
    assert tok.value not in repr(tok)


def test_sources_are_tried_in_documented_order(monkeypatch, tmp_path, make_jwt):
    egi = tmp_path / "egi" / "access_token"
    eosc = tmp_path / "eosc" / "access_token"
    eosc.parent.mkdir()
    eosc.write_text(make_jwt(sub="eosc"))
    assert tokens.TokenResolver(TokenConfig()).get().claims.subject == "eosc"
    egi.parent.mkdir()
    egi.write_text(make_jwt(sub="egi"))
    assert tokens.TokenResolver(TokenConfig()).get().claims.subject == "egi"
    mine = tmp_path / "mine"
    mine.write_text(make_jwt(sub="mine"))
    assert tokens.TokenResolver(TokenConfig(file=str(mine))).get().claims.subject == "mine"
    monkeypatch.setenv("FEDCLOUD_OIDC_ACCESS_TOKEN", make_jwt(sub="fedcloud"))
    assert tokens.TokenResolver(TokenConfig(file=str(mine))).get().claims.subject == "fedcloud"
    assert tokens.TokenResolver(TokenConfig(), explicit=make_jwt(sub="given")).get().claims.subject == "given"
    named = tokens.TokenResolver(TokenConfig(file=str(mine)), source="eosc").get()
    assert named.claims.subject == "eosc"


def test_token_file_rewritten_mid_process_is_picked_up(tmp_path, make_jwt):
    path = tmp_path / "access_token"
    path.write_text(make_jwt(sub="first"))
    resolver = tokens.TokenResolver(TokenConfig(file=str(path)))
    assert resolver.get().claims.subject == "first"
    path.write_text(make_jwt(sub="second") + "\n")
    assert resolver.get().claims.subject == "second"


def test_opaque_token_is_accepted_with_unknown_expiry(monkeypatch):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", "opaque-token-value-1234")
    tok = tokens.TokenResolver(TokenConfig()).get()
    assert tok.expires_at is None and not tok.claims.is_jwt and not tok.expired()


@pytest.mark.parametrize("content,problem", [("", "is empty"), ("  \n", "is empty"),
                                             ("aaa.bbb.ccc", "malformed JWT")])
def test_bad_token_file_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "access_token"
    path.write_text(content)
    with pytest.raises(TokenError) as info:
        tokens.TokenResolver(TokenConfig(file=str(path))).get()
    assert str(path) in str(info.value) and problem in str(info.value)


def test_unreadable_or_missing_token_file_is_reported(tmp_path):
    with pytest.raises(TokenError, match="is a directory"):
        tokens.TokenResolver(TokenConfig(file=str(tmp_path))).get()
    with pytest.raises(TokenError, match="does not exist"):
        tokens.TokenResolver(TokenConfig(file=str(tmp_path / "nope"))).get()


def test_a_fifo_as_token_file_is_refused_at_once_for_every_file_source(tmp_path, monkeypatch):
    fifo = tmp_path / "egi" / "access_token"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    monkeypatch.setattr(tokens.EgiNotebooksSource, "default_path", str(fifo))
    try:
        for source in (tokens.FileSource(fifo), tokens.EgiNotebooksSource(tokens.EgiNotebooksSource.default_path)):
            error, _ = bounded.call_within(source.fetch)
            assert isinstance(error, TokenError), error
            assert str(error) == (f"{source.describe()}: is a FIFO, not a regular file; "
                                  "secrets are read from regular files only")
    finally:
        with contextlib.suppress(OSError):  # a reader blocked on the FIFO gets end-of-file
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_device_or_an_oversized_token_file_is_refused_in_one_line(tmp_path):
    for device in ("/dev/null", "/dev/zero"):  # /dev/zero would fill memory
        error, _ = bounded.call_within(tokens.FileSource(device).fetch)
        assert str(error) == (f"token file {device}: is a device, not a regular file; "
                              "secrets are read from regular files only")
    path = tmp_path / "access_token"
    path.write_text("t" * (files.MAX_FILE_SIZE + 1))
    error, _ = bounded.call_within(tokens.FileSource(path).fetch)
    assert isinstance(error, TokenError) and f"token file {path}: is 64 KiB, too big" in str(error)
    with open(path, "r+b") as handle:
        handle.truncate(20 << 20)  # 20 MiB: minutes and gigabytes when it was read and registered
    error, seconds = bounded.call_within(tokens.FileSource(path).fetch)
    assert str(error) == f"token file {path}: is 20.0 MiB, too big for a token or key file (at most 64 KiB)"
    assert seconds < 1 and secrets.registered_count() == 0


def test_expired_token_is_skipped_for_a_valid_one_and_refused_alone(monkeypatch, tmp_path, make_jwt):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt(sub="old", lifetime=-120))
    with pytest.raises(TokenExpiredError, match="OIDC_ACCESS_TOKEN: the token expired 2 min ago"):
        tokens.TokenResolver(TokenConfig()).get()
    path = tmp_path / "t"
    path.write_text(make_jwt(sub="fresh"))
    assert tokens.TokenResolver(TokenConfig(file=str(path))).get().claims.subject == "fresh"


def test_no_token_lists_where_it_looked():
    with pytest.raises(TokenError) as info:
        tokens.TokenResolver(TokenConfig()).get()
    message = str(info.value)
    assert "no token found" in message and "OIDC_ACCESS_TOKEN" in message and "EGI Notebooks" in message


def test_unknown_or_unconfigured_source_is_named():
    with pytest.raises(TokenError, match="unknown token source 'nope'"):
        tokens.TokenResolver(TokenConfig(), source="nope").get()
    with pytest.raises(TokenError, match="'refresh' is not configured"):
        tokens.TokenResolver(TokenConfig(), source="refresh").get()


def test_oidc_agent_without_agent_gives_one_clear_error(monkeypatch):
    monkeypatch.delenv("OIDC_SOCK", raising=False)
    with pytest.raises(TokenError, match="oidc-agent account 'egi'"):
        tokens.TokenResolver(TokenConfig(oidc_agent_account="egi"), source="oidc-agent").get()


# ----------------------------------------------------------------------------- refresh grant


def test_refresh_grant_gets_a_token_and_caches_it_until_the_margin(oidc_provider, oidc_login):
    _, grant = oidc_login()
    cfg = refresh_cfg(oidc_provider.url, grant["refresh_token"], refresh_margin=0)
    resolver = tokens.TokenResolver(cfg)
    first = resolver.get()
    assert first.source.startswith("refresh grant at") and first.value != grant["access_token"]
    assert 3500 < first.seconds_left() <= 3600  # opaque token: expiry from the grant's expires_in
    assert resolver.get().value == first.value  # cached, not refreshed again


def test_refresh_grant_refreshes_ahead_of_expiry(oidc_provider, oidc_login):
    _, grant = oidc_login()
    # the provider's refreshed tokens live 3600 s: a margin of 3599 s puts expiry-minus-margin 1 s away
    cfg = refresh_cfg(oidc_provider.url, grant["refresh_token"], refresh_margin=3599)
    resolver = tokens.TokenResolver(cfg)
    first = resolver.get()
    assert resolver.get().value == first.value  # still outside the margin
    time.sleep(1.5)  # now inside the margin: the next use must refresh
    second = resolver.get()
    assert second.value != first.value
    assert second.expires_at > first.expires_at


def test_revoked_refresh_token_gives_a_clear_error(oidc_provider, oidc_login, caplog):
    sub, grant = oidc_login()
    oidc.revoke(oidc_provider.url, sub)
    cfg = refresh_cfg(oidc_provider.url, grant["refresh_token"])
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenError) as info:
        tokens.TokenResolver(cfg).get()
    assert "invalid_grant" in str(info.value) and "revoked or has expired" in str(info.value)
    assert grant["refresh_token"] not in str(info.value)
    assert grant["refresh_token"] not in caplog.text


def test_unreachable_issuer_is_reported(make_jwt):
    from tests.servers.harness import free_port

    cfg = refresh_cfg(f"http://127.0.0.1:{free_port()}", "rt-value-123456", timeout=1)
    with pytest.raises(TokenError, match="cannot reach the issuer"):
        tokens.TokenResolver(cfg).get()


def test_issuer_answering_garbage_is_reported():
    with AuthCheckServer(accept=lambda t: True) as garbage:  # answers {"ok": true} to everything
        cfg = refresh_cfg(garbage.url, "rt-value-123456")
        with pytest.raises(TokenError, match="not OpenID Connect metadata"):
            tokens.TokenResolver(cfg).get()


# ----------------------------------------------------------------------------- 401 helper


def test_401_forces_one_refresh_and_the_refreshed_token_is_accepted(oidc_provider, oidc_login):
    _, grant = oidc_login()
    resolver = tokens.TokenResolver(refresh_cfg(oidc_provider.url, grant["refresh_token"]))
    stale = resolver.get().value
    with AuthCheckServer(accept=lambda t: t != stale) as api:
        client = HttpClient(api.url, service="test API", token=resolver, retry=Retry(initial=0.01))
        assert client.get("/data").json() == {"ok": True}
    assert api.seen[0] == stale and api.seen[1] != stale and len(api.seen) == 2


def test_second_401_says_why_and_never_shows_the_token(monkeypatch, make_jwt, caplog):
    value = make_jwt(vos=("vo.other.eu",))
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", value)
    monkeypatch.setenv("NBPLUGINS_VO", "vo.nbplugins.eu")
    with caplog.at_level(logging.DEBUG), AuthCheckServer(accept=lambda t: False) as api:
        client = HttpClient(api.url, service="test API", token=tokens.default_resolver())
        with pytest.raises(AuthError) as info:
            client.get("/data")
    message = str(info.value)
    assert "refused the token from environment variable OIDC_ACCESS_TOKEN twice" in message
    assert "no membership of VO vo.nbplugins.eu (it has: vo.other.eu)" in message
    assert value not in message and value not in caplog.text
    assert len(api.seen) == 2


def test_transient_5xx_is_retried_through_the_shared_policy(monkeypatch, make_jwt):
    monkeypatch.setenv("OIDC_ACCESS_TOKEN", make_jwt())
    with AuthCheckServer(accept=lambda t: True, fail_first=2) as api:
        client = HttpClient(api.url, service="test API", token=tokens.default_resolver(),
                            retry=Retry(initial=0.01, jitter=0))
        assert client.get("/x").status_code == 200
    assert len(api.seen) == 3


def test_current_returns_a_valid_token_for_notebook_code(monkeypatch, tmp_path, make_jwt):
    path = tmp_path / "tok"
    path.write_text(make_jwt(sub="nb"))
    monkeypatch.setenv("NBPLUGINS_TOKEN_FILE", str(path))
    value = tokens.current()
    assert tokens.decode_claims(value).subject == "nb"
    assert secrets.redact(f"x{value}y") == "x***y"


# ----------------------------------------------------------------------------- userinfo


def test_an_opaque_tokens_user_and_vos_come_from_the_issuers_userinfo(oidc_provider, oidc_login, monkeypatch):
    _, grant = oidc_login("alice@egi.eu")  # the provider's alice has an EGI entitlement
    token = tokens.Token(grant["access_token"], "test", tokens.decode_claims(grant["access_token"]))
    assert not token.claims.is_jwt  # the provider issues opaque access tokens
    monkeypatch.setenv("NBPLUGINS_OIDC_ISSUER", oidc_provider.url)
    who = tokens.identity(token)
    assert (who.subject, who.vos, who.origin) == ("alice@egi.eu", ("vo.nbplugins.eu",), "the issuer's userinfo")
    assert tokens.diagnose(token, vo="vo.other.eu") == (
        "the issuer's userinfo shows no membership of VO vo.other.eu (it has: vo.nbplugins.eu)")
    assert "no membership" not in tokens.diagnose(token, vo="vo.nbplugins.eu")


def test_a_jwt_without_entitlements_asks_userinfo_and_one_with_them_does_not(oidc_provider, oidc_login, make_jwt,
                                                                              monkeypatch):
    from tests.servers.harness import free_port

    def token(value: str) -> tokens.Token:
        return tokens.Token(value, "test", tokens.decode_claims(value))

    monkeypatch.setenv("NBPLUGINS_OIDC_ISSUER", f"http://127.0.0.1:{free_port()}")
    with_vos = token(make_jwt(vos=("vo.a.eu",), iss=f"http://127.0.0.1:{free_port()}"))
    assert tokens.identity(with_vos).vos == ("vo.a.eu",)  # no network: an unreachable issuer is never asked
    raw = make_jwt(iss=oidc_provider.url)
    claims = tokens.decode_claims(raw).raw
    claims.pop("eduperson_entitlement")
    bare = token(__import__("jwt").encode(claims, "another-key-0123456789-0123456789", algorithm="HS256"))
    who = tokens.identity(bare)  # asks the token's own issuer; the provider refuses a token it did not issue
    assert who.vos is None and who.origin.startswith("unknown: the userinfo endpoint of") and "answered HTTP 4" in who.origin


def test_an_unreachable_issuer_leaves_the_vos_unknown_without_failing(monkeypatch):
    from tests.servers.harness import free_port

    monkeypatch.setenv("NBPLUGINS_OIDC_ISSUER", f"http://127.0.0.1:{free_port()}")
    who = tokens.identity(tokens.Token("opaque-token-value-0123456789", "test"))
    assert who.vos is None and who.origin.startswith("unknown: cannot reach the issuer (")
    assert "connection refused" in who.origin


def test_vos_come_from_either_entitlement_claim(make_jwt):
    import jwt as pyjwt

    raw = {"sub": "a", "entitlements": ["urn:mace:egi.eu:group:vo.example.eu:role=member#aai.egi.eu"]}
    claims = tokens.decode_claims(pyjwt.encode(raw, "k" * 32, algorithm="HS256"))
    assert claims.vos == ("vo.example.eu",) and claims.has_entitlements
