"""py_webauthn around our tables: options, single-use challenges, and every check the
library leaves to us (SPEC §7).

A ceremony is `start_*` (store a challenge bound to the browser and a purpose, return the
options JSON) then `take_challenge` (consume it atomically, exactly once) and `verify_*`.
"""

from __future__ import annotations

import binascii
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
)
from webauthn.helpers.cose import COSECRV, COSEAlgorithmIdentifier
from webauthn.helpers.decode_credential_public_key import (
    DecodedEC2PublicKey,
    DecodedOKPPublicKey,
    DecodedRSAPublicKey,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from models import Passkey, User, WebAuthnChallenge, utcnow
from models.challenge import Purpose
from models.passkey import passkey_by_credential_id
from web.errors import Refused
from web.settings import Settings

CHALLENGE_TTL = timedelta(minutes=5)
CEREMONY_TIMEOUT_MS = 120_000
MAX_CREDENTIAL_ID_BYTES = 1023
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
KNOWN_TRANSPORTS = {t.value for t in AuthenticatorTransport}
KEY_SHAPES = {  # what a public key of each offered algorithm must be (type, curve)
    COSEAlgorithmIdentifier.ECDSA_SHA_256: (DecodedEC2PublicKey, COSECRV.P256),
    COSEAlgorithmIdentifier.EDDSA: (DecodedOKPPublicKey, COSECRV.ED25519),
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256: (DecodedRSAPublicKey, None),
}

MALFORMED = "The passkey response was malformed. Please try again."
FAILED = "The passkey could not be verified. Please try again."
EXPIRED = "This passkey request expired or was already used. Please try again."
NO_PASSKEY = "This account has no passkey to verify with."


@dataclass(frozen=True)
class NewCredential:
    """A verified registration, ready to be stored."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    backup_eligible: bool
    backup_state: bool
    transports: list[str]


def _store_challenge(
    db: Session,
    challenge: bytes,
    *,
    binding: str,
    session_id: int | None,
    user_id: int | None,
    purpose: Purpose,
    allow: list[bytes],
    data: dict[str, Any],
) -> None:
    now = utcnow()
    db.add(
        WebAuthnChallenge(
            challenge=challenge,
            binding_hash=binding,
            session_id=session_id,
            user_id=user_id,
            purpose=purpose,
            allow_credentials=[bytes_to_base64url(c) for c in allow],
            data=data,
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
        )
    )


def start_registration(
    db: Session,
    settings: Settings,
    user: User,
    existing: list[Passkey],
    *,
    binding: str,
    session_id: int | None,
    purpose: Purpose,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Creation options (resident key and UV preferred, attestation none); the caller commits."""
    options = generate_registration_options(
        rp_id=settings.rp_id,
        rp_name=settings.rp_name,
        user_id=user.webauthn_handle,
        user_name=user.username,
        user_display_name=user.display_name or user.username,
        challenge=secrets.token_bytes(32),
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[_descriptor(p) for p in existing],
        supported_pub_key_algs=ALGORITHMS,
    )
    _store_challenge(
        db,
        options.challenge,
        binding=binding,
        session_id=session_id,
        user_id=user.id,
        purpose=purpose,
        allow=[],
        data=data or {},
    )
    return json.loads(options_to_json(options))


def start_authentication(
    db: Session,
    settings: Settings,
    *,
    binding: str,
    session_id: int | None,
    purpose: Purpose,
    user: User | None = None,
    allow: list[Passkey] | None = None,
    require_uv: bool = False,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Request options; `allow` limits the ceremony to those passkeys. Without a `user` (a
    passkey sign-in) the ceremony is discoverable; with one it is limited to the explicit
    list, and a user without a passkey gets a 409 (never "any passkey of the user")."""
    allow = allow or []
    if user is not None and not allow:
        raise Refused(409, NO_PASSKEY)
    options = generate_authentication_options(
        rp_id=settings.rp_id,
        challenge=secrets.token_bytes(32),
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=[_descriptor(p) for p in allow],
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if require_uv
            else UserVerificationRequirement.PREFERRED
        ),
    )
    _store_challenge(
        db,
        options.challenge,
        binding=binding,
        session_id=session_id,
        user_id=user.id if user else None,
        purpose=purpose,
        allow=[p.credential_id for p in allow],
        data={**(data or {}), "require_uv": require_uv},
    )
    return json.loads(options_to_json(options))


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    transports = [AuthenticatorTransport(t) for t in passkey.transports if t in KNOWN_TRANSPORTS]
    return PublicKeyCredentialDescriptor(id=passkey.credential_id, transports=transports or None)


def client_data(credential: dict[str, Any]) -> dict[str, Any]:
    """The decoded clientDataJSON of a credential, or a 400."""
    try:
        raw = base64url_to_bytes(credential["response"]["clientDataJSON"])
        data = json.loads(raw)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise Refused(400, MALFORMED) from exc
    if not isinstance(data, dict) or not isinstance(data.get("challenge"), str):
        raise Refused(400, MALFORMED)
    return data


def take_challenge(
    db: Session, credential: Any, *, purpose: Purpose, binding: str
) -> WebAuthnChallenge:
    """Consume the credential's challenge: it must be ours, this browser's, of this purpose,
    unexpired and unused. The UPDATE … WHERE consumed_at IS NULL makes it single-use even
    under concurrent requests. The caller commits (on success and on failure)."""
    if not isinstance(credential, dict):
        raise Refused(400, MALFORMED)
    data = client_data(credential)
    try:
        challenge = base64url_to_bytes(data["challenge"])
    except (ValueError, binascii.Error) as exc:
        raise Refused(400, MALFORMED) from exc
    now = utcnow()
    result = db.exec(
        update(WebAuthnChallenge)
        .where(
            col(WebAuthnChallenge.challenge) == challenge,
            col(WebAuthnChallenge.binding_hash) == binding,
            col(WebAuthnChallenge.purpose) == purpose,
            col(WebAuthnChallenge.consumed_at).is_(None),
            col(WebAuthnChallenge.expires_at) > now,
        )
        .values(consumed_at=now)
    )
    if result.rowcount != 1:
        raise Refused(400, EXPIRED)
    return db.exec(select(WebAuthnChallenge).where(WebAuthnChallenge.challenge == challenge)).one()


def _check_client_context(data: dict[str, Any]) -> None:
    """WebAuthn §7.1 step 13/§7.2 step 15: no cross-origin iframe ceremonies."""
    if data.get("crossOrigin") is True or "topOrigin" in data:
        raise Refused(400, "Passkeys can't be used from an embedded page.")


def verify_registration(
    settings: Settings, challenge: WebAuthnChallenge, credential: dict[str, Any]
) -> NewCredential:
    _check_client_context(client_data(credential))
    raw_id = _raw_id(credential)
    if len(raw_id) > MAX_CREDENTIAL_ID_BYTES:
        raise Refused(400, "The passkey's identifier is too long.")
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge.challenge,
            expected_rp_id=settings.rp_id,
            expected_origin=settings.expected_origins,
            require_user_verification=False,
            supported_pub_key_algs=ALGORITHMS,
        )
    except (WebAuthnException, KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise Refused(400, FAILED) from exc
    if verified.credential_id != raw_id:
        raise Refused(400, MALFORMED)
    _check_public_key(verified.credential_public_key)
    transports = credential["response"].get("transports")  # unsigned: any JSON value
    if not isinstance(transports, list):
        transports = []
    return NewCredential(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backup_state=verified.credential_backed_up,
        transports=[t for t in transports if isinstance(t, str) and t in KNOWN_TRANSPORTS],
    )


def _check_public_key(raw: bytes) -> None:
    """With "none" attestation nothing vouches for the key: refuse one that could never
    verify a signature (not on its curve, wrong type for its algorithm, bad numbers)."""
    try:
        decoded = decode_credential_public_key(raw)
        shape, curve = KEY_SHAPES[decoded.alg]
        if not isinstance(decoded, shape) or (
            curve is not None and getattr(decoded, "crv", None) != curve
        ):
            raise ValueError("key type does not match its algorithm")
        decoded_public_key_to_cryptography(decoded)
    except Exception as exc:  # whatever the library or cryptography raise: unusable
        raise Refused(400, "The passkey's public key is malformed.") from exc


def _raw_id(credential: dict[str, Any]) -> bytes:
    try:
        raw_id = base64url_to_bytes(credential["rawId"])
        if base64url_to_bytes(credential["id"]) != raw_id:
            raise ValueError("id and rawId differ")
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise Refused(400, MALFORMED) from exc
    if not raw_id:
        raise Refused(400, MALFORMED)
    return raw_id


UNKNOWN_CREDENTIAL = "unknown-credential"
NOT_REGISTERED = "That passkey is not registered with this account."


def refuse_unknown_credential(db: Session, credential: dict[str, Any]) -> None:
    """Passkey sign-in with a credential this site does not know (removed, or never ours):
    a 400 with the code `unknown-credential` and the credential ID, so that the shim can
    tell the password manager (`PublicKeyCredential.signalUnknownCredential`)."""
    raw_id = _raw_id(credential)
    if passkey_by_credential_id(db, raw_id) is None:
        raise Refused(
            400,
            NOT_REGISTERED,
            code=UNKNOWN_CREDENTIAL,
            data={"credentialId": bytes_to_base64url(raw_id)},
        )


class SignCountRegression(Refused):
    """The authenticator's counter went backwards: possibly a cloned authenticator."""

    def __init__(self, passkey: Passkey):
        super().__init__(400, FAILED)
        self.passkey = passkey


def verify_authentication(
    db: Session,
    settings: Settings,
    challenge: WebAuthnChallenge,
    credential: dict[str, Any],
    *,
    owner: User | None = None,
) -> Passkey:
    """Check an assertion against the challenge and the stored passkey; on success the
    passkey's counters are updated in the session (the caller commits)."""
    _check_client_context(client_data(credential))
    raw_id = _raw_id(credential)
    # a ceremony of a known user is limited to its stored list, even an empty one
    limited = challenge.user_id is not None or bool(challenge.allow_credentials)
    if limited and bytes_to_base64url(raw_id) not in (challenge.allow_credentials or []):
        raise Refused(400, "That passkey can't be used here.")
    passkey = passkey_by_credential_id(db, raw_id)
    if passkey is None:
        raise Refused(400, NOT_REGISTERED)
    if challenge.user_id is not None and passkey.user_id != challenge.user_id:
        raise Refused(400, "That passkey can't be used here.")
    if owner is not None:  # discoverable sign-in: the userHandle must name the owner
        handle = _user_handle(credential)
        if handle is None or handle != owner.webauthn_handle or passkey.user_id != owner.id:
            raise Refused(400, "That passkey does not belong to this account.")
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge.challenge,
            expected_rp_id=settings.rp_id,
            expected_origin=settings.expected_origins,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=bool(challenge.data.get("require_uv")),
        )
    except WebAuthnException as exc:
        if "sign count" in str(exc):
            raise SignCountRegression(passkey) from exc
        raise Refused(400, FAILED) from exc
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise Refused(400, FAILED) from exc
    backup_eligible = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    if backup_eligible != passkey.backup_eligible:
        raise Refused(400, "This passkey's backup eligibility changed; it can't be trusted.")
    passkey.sign_count = verified.new_sign_count
    passkey.backup_state = verified.credential_backed_up
    passkey.last_used_at = utcnow()
    db.add(passkey)
    return passkey


def _user_handle(credential: dict[str, Any]) -> bytes | None:
    response = credential.get("response")  # any JSON value: only an object has members
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if not isinstance(handle, str) or not handle:
        return None
    try:
        return base64url_to_bytes(handle)
    except (ValueError, binascii.Error):
        return None


def user_handle_of(credential: dict[str, Any]) -> bytes | None:
    """The userHandle of a discoverable assertion, or None when absent or empty."""
    return _user_handle(credential) if isinstance(credential, dict) else None


def store_passkey(db: Session, user: User, new: NewCredential, name: str) -> Passkey:
    """Adds the passkey (caller commits); a credential ID already stored anywhere is a 409."""
    if passkey_by_credential_id(db, new.credential_id) is not None:
        raise Refused(409, "This passkey is already registered.")
    passkey = Passkey(
        credential_id=new.credential_id,
        user_id=user.pk,
        public_key=new.public_key,
        sign_count=new.sign_count,
        transports=new.transports,
        aaguid=new.aaguid,
        backup_eligible=new.backup_eligible,
        backup_state=new.backup_state,
        name=name,
    )
    try:
        with db.begin_nested():  # a concurrent registration of the same ID: 409, not 500
            db.add(passkey)
            db.flush()
    except IntegrityError:
        raise Refused(409, "This passkey is already registered.") from None
    return passkey
