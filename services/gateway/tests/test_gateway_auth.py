import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_encode

from switchboard_gateway.auth import AuthError, Verifier
from switchboard_gateway.settings import Settings

SECRET = "unit-test-secret-that-is-32-bytes-long"


def _hs(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_a_good_token_names_its_user() -> None:
    verifier = Verifier(SECRET, "HS256", None, None)
    assert verifier.user_id(_hs({"sub": "ann", "exp": int(time.time()) + 60})) == "ann"


@pytest.mark.parametrize(
    "token",
    [
        "ann",  # a bare user id, as the Socket.IO guide's clients send
        _hs({"sub": "ann", "exp": int(time.time()) - 120}),  # expired beyond the 30 s leeway
        _hs({"sub": "ann"}),
        _hs({"exp": int(time.time()) + 60}),
        _hs({"sub": "ann", "exp": int(time.time()) + 60}, "another-secret-that-is-32-bytes-long"),
        _hs({"sub": "x" * 129, "exp": int(time.time()) + 60}),
        _hs({"sub": "é" * 101, "exp": int(time.time()) + 60}),  # 101 characters but 202 bytes
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthError):
        Verifier(SECRET, "HS256", None, None).user_id(token)


def test_a_small_clock_difference_is_tolerated() -> None:
    verifier = Verifier(SECRET, "HS256", None, None, leeway=30)
    issued_ahead = _hs({"sub": "ann", "exp": int(time.time()) + 60, "iat": int(time.time()) + 10})
    assert verifier.user_id(issued_ahead) == "ann"


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = Verifier(SECRET, "HS256", "chat", "https://auth.example")
    good = {"sub": "ann", "exp": int(time.time()) + 60, "aud": "chat", "iss": "https://auth.example"}
    assert verifier.user_id(_hs(good)) == "ann"
    with pytest.raises(AuthError):
        verifier.user_id(_hs({**good, "aud": "other"}))
    with pytest.raises(AuthError):
        verifier.user_id(_hs({**good, "iss": "https://evil.example"}))


def test_rs256_is_pinned_when_a_public_key_is_configured() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = Verifier(public.decode(), "RS256", None, None)
    claims = {"sub": "ann", "exp": int(time.time()) + 60}
    assert verifier.user_id(jwt.encode(claims, key, algorithm="RS256")) == "ann"
    # The classic confusion attack: HS256 "signed" with the public key. PyJWT will not make such
    # a token, so it is built by hand.
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    signature = base64url_encode(hmac.new(public, signing_input, hashlib.sha256).digest())
    with pytest.raises(AuthError):
        verifier.user_id((signing_input + b"." + signature).decode())


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},  # a numeric string, which PyJWT converts
        {"exp": 1e300},  # never expires
        {"exp": 9_999_999_999_999},  # past the year 9999
        {"nbf": 1.5},
        {"iat": True},
        {"iat": -1},
    ],
    ids=["exp string", "exp 1e300", "exp past 9999", "nbf fraction", "iat boolean", "iat negative"],
)
def test_time_claims_must_be_whole_seconds_in_range(claims: dict[str, object]) -> None:
    token = _hs({"sub": "ann", "exp": int(time.time()) + 60, **claims})
    with pytest.raises(AuthError, match="whole number of seconds"):
        Verifier(SECRET, "HS256", None, None).verify(token)


def test_a_verified_token_says_when_it_expires() -> None:
    exp = int(time.time()) + 60
    verified = Verifier(SECRET, "HS256", None, None).verify(_hs({"sub": "ann", "exp": exp}))
    assert (verified.user_id, verified.expires_at) == ("ann", exp)


def test_a_secret_under_32_bytes_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_secret="x" * 31)
    assert Settings(jwt_secret="x" * 32).jwt_secret is not None
