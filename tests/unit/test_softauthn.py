"""Check the software authenticator against py_webauthn itself (no server involved)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import webauthn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import (
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidBackupFlags,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRequestOptions,
)

from tests.softauthn import (
    ExcludedCredential,
    NoCredential,
    SoftAuthenticator,
    UnsupportedAlgorithm,
    b64url,
    b64url_decode,
)

ORIGIN = "http://localhost:8000"
RP_ID = "localhost"
USER_ID = b"user-handle-0001"


def registration_options(
    exclude: list[bytes] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Server-side registration options: (challenge, options JSON dict)."""
    opts = webauthn.generate_registration_options(
        rp_id=RP_ID,
        rp_name="Barycenter",
        user_id=USER_ID,
        user_name="alice",
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude or []],
    )
    return opts.challenge, json.loads(webauthn.options_to_json(opts))


def authentication_options(
    allow: list[bytes] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Server-side authentication options: (challenge, options JSON dict)."""
    opts: PublicKeyCredentialRequestOptions = webauthn.generate_authentication_options(
        rp_id=RP_ID,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow or []],
    )
    return opts.challenge, json.loads(webauthn.options_to_json(opts))


def verify_registration(response: dict[str, Any], challenge: bytes):
    return webauthn.verify_registration_response(
        credential=response,
        expected_challenge=challenge,
        expected_origin=ORIGIN,
        expected_rp_id=RP_ID,
        require_user_verification=True,
    )


def verify_authentication(
    response: dict[str, Any], challenge: bytes, public_key: bytes, current_count: int = 0
):
    return webauthn.verify_authentication_response(
        credential=response,
        expected_challenge=challenge,
        expected_origin=ORIGIN,
        expected_rp_id=RP_ID,
        credential_public_key=public_key,
        credential_current_sign_count=current_count,
        require_user_verification=True,
    )


@pytest.fixture
def auth() -> SoftAuthenticator:
    return SoftAuthenticator()


@pytest.fixture
def registered(auth: SoftAuthenticator) -> tuple[bytes, bytes]:
    """Register one credential cleanly; return (credential_id, COSE public key)."""
    challenge, options = registration_options()
    verified = verify_registration(auth.register(options), challenge)
    return verified.credential_id, verified.credential_public_key


# ------------------------------------------------------------------------- helpers


def test_b64url_round_trip_without_padding() -> None:
    for data in (b"", b"\xfb", b"\xfb\xff", b"\xfb\xff\xfe", bytes(range(256))):
        encoded = b64url(data)
        assert "=" not in encoded and "+" not in encoded and "/" not in encoded
        assert b64url_decode(encoded) == data


# -------------------------------------------------------------------- registration


def test_clean_registration_verifies(auth: SoftAuthenticator) -> None:
    challenge, options = registration_options()
    response = auth.register(options)

    assert response["type"] == "public-key"
    assert response["authenticatorAttachment"] == "platform"
    assert response["clientExtensionResults"] == {}
    assert response["response"]["transports"] == ["internal"]
    assert response["response"]["publicKeyAlgorithm"] == -7
    parse_registration_credential_json(response)  # the browser JSON shape parses

    verified = verify_registration(response, challenge)

    credential_id = b64url_decode(response["rawId"])
    assert verified.credential_id == credential_id
    assert list(auth.credentials) == [credential_id]
    cred = auth.credentials[credential_id]
    assert cred.user_handle == USER_ID
    assert cred.rp_id == RP_ID
    assert verified.credential_public_key == cred.cose_public_key
    assert verified.sign_count == 0
    assert verified.fmt == "none"
    assert verified.user_verified is True
    assert verified.credential_device_type == CredentialDeviceType.SINGLE_DEVICE
    assert verified.credential_backed_up is False

    # getPublicKey() form: SPKI DER of the same key, loadable by cryptography.
    spki = serialization.load_der_public_key(b64url_decode(response["response"]["publicKey"]))
    assert spki == cred.private_key.public_key()


def test_backup_flags_reach_the_server() -> None:
    auth = SoftAuthenticator(backup_eligible=True, backup_state=True)
    challenge, options = registration_options()
    verified = verify_registration(auth.register(options), challenge)
    assert verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    assert verified.credential_backed_up is True


@pytest.mark.parametrize(
    "overrides",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b"not the challenge"},
        {"type": "webauthn.get"},
        {"user_verified": False},
        {"user_present": False},
    ],
    ids=lambda o: ",".join(o),
)
def test_registration_override_is_rejected(
    auth: SoftAuthenticator, overrides: dict[str, Any]
) -> None:
    challenge, options = registration_options()
    with pytest.raises(InvalidRegistrationResponse):
        verify_registration(auth.register(options, **overrides), challenge)


def test_excluded_credential_raises(auth: SoftAuthenticator, registered) -> None:
    credential_id, _ = registered
    _, options = registration_options(exclude=[b"someone else", credential_id])
    with pytest.raises(ExcludedCredential):
        auth.register(options)


def test_unsupported_algorithm_raises(auth: SoftAuthenticator) -> None:
    _, options = registration_options()
    options["pubKeyCredParams"] = [{"type": "public-key", "alg": -257}]
    with pytest.raises(UnsupportedAlgorithm):
        auth.register(options)


def test_custom_credential_id(auth: SoftAuthenticator) -> None:
    challenge, options = registration_options()
    long_id = bytes(range(256)) * 4
    response = auth.register(options, credential_id=long_id)
    assert b64url_decode(response["id"]) == long_id
    # py_webauthn 3.0.1 does not enforce the spec's 1023-byte limit: the RP must.
    assert verify_registration(response, challenge).credential_id == long_id


def test_duplicate_credential_id_keeps_the_existing_credential(
    auth: SoftAuthenticator, registered
) -> None:
    credential_id, public_key = registered
    challenge, options = registration_options()
    verified = verify_registration(auth.register(options, credential_id=credential_id), challenge)
    assert verified.credential_id == credential_id
    assert verified.credential_public_key != public_key
    assert auth.credentials[credential_id].cose_public_key == public_key


def test_malformed_public_key_is_otherwise_well_formed(auth: SoftAuthenticator) -> None:
    challenge, options = registration_options()
    response = auth.register(options, malformed_public_key=True)
    assert "publicKey" not in response["response"]
    credential = parse_registration_credential_json(response)
    attestation = parse_attestation_object(credential.response.attestation_object)
    attested = attestation.auth_data.attested_credential_data
    assert attested is not None
    assert attested.credential_id == b64url_decode(response["rawId"])
    # Surprise: py_webauthn 3.0.1 lets a bare KeyError (not a WebAuthnException) escape
    # for an EC2 key without y, so the server has to catch it itself.
    with pytest.raises(KeyError):
        verify_registration(response, challenge)


def test_backup_state_without_eligibility_is_rejected(auth: SoftAuthenticator) -> None:
    challenge, options = registration_options()
    # Raised as InvalidBackupFlags, which is not an InvalidRegistrationResponse.
    with pytest.raises(InvalidBackupFlags):
        verify_registration(auth.register(options, backup_state=True), challenge)


# ------------------------------------------------------------------ authentication


def test_clean_authentication_verifies(auth: SoftAuthenticator, registered) -> None:
    credential_id, public_key = registered
    challenge, options = authentication_options(allow=[b"someone else", credential_id])
    response = auth.authenticate(options)

    assert response["rawId"] == b64url(credential_id)
    assert response["response"]["userHandle"] == b64url(USER_ID)
    parse_authentication_credential_json(response)

    verified = verify_authentication(response, challenge, public_key)
    assert verified.credential_id == credential_id
    assert verified.new_sign_count == 1
    assert verified.user_verified is True

    challenge, options = authentication_options(allow=[credential_id])
    verified = verify_authentication(auth.authenticate(options), challenge, public_key, 1)
    assert verified.new_sign_count == 2


def test_discoverable_request_picks_credential_for_rp(auth: SoftAuthenticator, registered) -> None:
    credential_id, public_key = registered
    challenge, options = authentication_options()
    assert "allowCredentials" not in options or options["allowCredentials"] == []
    response = auth.authenticate(options)
    assert response["rawId"] == b64url(credential_id)
    verify_authentication(response, challenge, public_key)


def test_no_usable_credential_raises(auth: SoftAuthenticator, registered) -> None:
    _, options = authentication_options(allow=[b"someone else"])
    with pytest.raises(NoCredential):
        auth.authenticate(options)
    with pytest.raises(NoCredential):
        auth.authenticate(options, credential_id=b"unknown")
    with pytest.raises(NoCredential):
        SoftAuthenticator(rp_id="other.example").authenticate({"challenge": "AAAA"})


@pytest.mark.parametrize(
    "overrides",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b"not the challenge"},
        {"type": "webauthn.create"},
        {"user_verified": False},
        {"user_present": False},
        {"signature": b"\x30\x06\x02\x01\x01\x02\x01\x01"},
        {"signature": b"garbage"},
    ],
    ids=lambda o: ",".join(o),
)
def test_authentication_override_is_rejected(
    auth: SoftAuthenticator, registered, overrides: dict[str, Any]
) -> None:
    credential_id, public_key = registered
    challenge, options = authentication_options(allow=[credential_id])
    with pytest.raises(InvalidAuthenticationResponse):
        verify_authentication(auth.authenticate(options, **overrides), challenge, public_key)


def test_signature_over_other_data_is_rejected(auth: SoftAuthenticator, registered) -> None:
    credential_id, public_key = registered
    key = auth.credentials[credential_id].private_key
    wrong = key.sign(b"something else", ec.ECDSA(hashes.SHA256()))
    challenge, options = authentication_options(allow=[credential_id])
    with pytest.raises(InvalidAuthenticationResponse, match="signature"):
        verify_authentication(auth.authenticate(options, signature=wrong), challenge, public_key)


def test_sign_count_override(auth: SoftAuthenticator, registered) -> None:
    credential_id, public_key = registered
    challenge, options = authentication_options(allow=[credential_id])
    response = auth.authenticate(options, sign_count=5)
    assert verify_authentication(response, challenge, public_key, 4).new_sign_count == 5
    assert auth.credentials[credential_id].sign_count == 0  # stored counter untouched

    challenge, options = authentication_options(allow=[credential_id])
    with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
        verify_authentication(auth.authenticate(options, sign_count=5), challenge, public_key, 5)


def test_user_handle_override(auth: SoftAuthenticator, registered) -> None:
    _, options = authentication_options()
    assert "userHandle" not in auth.authenticate(options, user_handle=None)["response"]
    assert auth.authenticate(options, user_handle=b"")["response"]["userHandle"] == ""
    other = auth.authenticate(options, user_handle=b"bob")
    assert parse_authentication_credential_json(other).response.user_handle == b"bob"


def test_cross_origin_is_not_checked_by_py_webauthn(auth: SoftAuthenticator, registered) -> None:
    """py_webauthn 3.0.1 ignores crossOrigin/topOrigin: an RP that cares must check them."""
    credential_id, public_key = registered
    challenge, options = authentication_options(allow=[credential_id])
    response = auth.authenticate(options, cross_origin=True, top_origin="https://evil.example")
    client_data = json.loads(b64url_decode(response["response"]["clientDataJSON"]))
    assert client_data["crossOrigin"] is True
    assert client_data["topOrigin"] == "https://evil.example"
    verify_authentication(response, challenge, public_key)
