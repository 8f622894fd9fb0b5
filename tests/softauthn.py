"""A tiny software WebAuthn authenticator for tests ("softauthn").

`SoftAuthenticator` plays the part of both the browser and a platform authenticator.
It takes the options JSON the server hands to `navigator.credentials.create()` /
`navigator.credentials.get()` and returns exactly what `PublicKeyCredential.toJSON()`
would give the page: a dict whose binary members are base64url strings without
padding. That dict can be posted to the server, or fed straight to
`webauthn.verify_registration_response` / `webauthn.verify_authentication_response`.

Only ES256 (P-256, COSE alg -7) and the "none" attestation format are implemented.

Every ceremony accepts keyword overrides that change exactly one property of the
response while keeping everything else well formed and correctly signed, so a test
can check that the server rejects that one property:

    auth = SoftAuthenticator()
    options = json.loads(webauthn.options_to_json(opts))
    good = auth.register(options)
    bad = auth.register(options, origin="https://evil.example")
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ES256",
    "ExcludedCredential",
    "NoCredential",
    "SoftAuthenticator",
    "SoftAuthnError",
    "SoftCredential",
    "UnsupportedAlgorithm",
    "b64url",
    "b64url_decode",
]

ES256 = -7
"""COSE algorithm identifier for ECDSA over P-256 with SHA-256, the only one we support."""

# Authenticator data flag bits (WebAuthn L3, section 6.1).
FLAG_UP = 0x01  # user present
FLAG_UV = 0x04  # user verified
FLAG_BE = 0x08  # backup eligible
FLAG_BS = 0x10  # backup state
FLAG_AT = 0x40  # attested credential data included

_UNSET: Any = object()
"""Marks an override that was not given (needed where None is a meaningful value)."""


def b64url(data: bytes) -> str:
    """Encode bytes as base64url without padding, as WebAuthn's JSON forms do."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    """Decode base64url, with or without padding."""
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class SoftAuthnError(Exception):
    """Base class for the errors a browser would surface as a rejected promise."""


class ExcludedCredential(SoftAuthnError):
    """One of our credentials is in excludeCredentials (the browser's InvalidStateError)."""


class NoCredential(SoftAuthnError):
    """No credential of ours may answer the request (the browser's NotAllowedError)."""


class UnsupportedAlgorithm(SoftAuthnError):
    """pubKeyCredParams does not offer ES256 (the browser's NotSupportedError)."""


@dataclass
class SoftCredential:
    """One credential held by the authenticator."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    @property
    def cose_public_key(self) -> bytes:
        """The public key as a CBOR-encoded COSE_Key, as stored by the relying party."""
        return cbor2.dumps(_cose_key(self.private_key.public_key()))

    @property
    def spki_public_key(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (what `getPublicKey()` returns)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(kw_only=True)
class SoftAuthenticator:
    """A platform authenticator plus the browser around it.

    `rp_id` is used when the options carry no RP ID (the browser would use the page's
    effective domain); `origin` is the page origin written into clientDataJSON. The
    backup flags are the authenticator's defaults and can be overridden per call.
    `credentials` maps credential id to the credential; tests may inspect or edit it.
    """

    rp_id: str = "localhost"
    origin: str = "http://localhost:8000"
    backup_eligible: bool = False
    backup_state: bool = False
    aaguid: bytes = bytes(16)
    credentials: dict[bytes, SoftCredential] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if len(self.aaguid) != 16:
            raise ValueError("aaguid must be 16 bytes")

    # ------------------------------------------------------------------ registration

    def register(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        malformed_public_key: bool = False,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: bytes | None = None,
        type: str = "webauthn.create",
        cross_origin: bool = False,
        top_origin: str | None = None,
        user_present: bool = True,
        user_verified: bool = True,
        backup_eligible: bool | None = None,
        backup_state: bool | None = None,
        sign_count: int | None = None,
    ) -> dict[str, Any]:
        """Answer `navigator.credentials.create()`; return RegistrationResponseJSON.

        `options` is PublicKeyCredentialCreationOptionsJSON, e.g.
        `json.loads(webauthn.options_to_json(opts))`. A new ES256 credential is created
        and stored in `credentials` (unless `credential_id` names one we already hold:
        the existing credential is then kept, and the response carries a fresh key the
        authenticator forgets). Raises `ExcludedCredential` if excludeCredentials
        names one of our credentials; drop that list from `options` to bypass it.

        Overrides: `credential_id` (bytes for the new credential's id), and
        `malformed_public_key=True` (COSE key without its y coordinate; the response
        then has no `publicKey`). `sign_count` sets the new credential's starting
        counter (default 0). The others are as described in `authenticate`.
        """
        for descriptor in options.get("excludeCredentials") or []:
            if b64url_decode(descriptor["id"]) in self.credentials:
                raise ExcludedCredential(descriptor["id"])
        algs = [param.get("alg") for param in options.get("pubKeyCredParams") or []]
        if algs and ES256 not in algs:
            raise UnsupportedAlgorithm(f"no ES256 in pubKeyCredParams {algs}")

        effective_rp_id = options.get("rp", {}).get("id") or self.rp_id
        cred = SoftCredential(
            credential_id=secrets.token_bytes(16) if credential_id is None else credential_id,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=effective_rp_id,
            user_handle=b64url_decode(options["user"]["id"]),
        )
        if sign_count is not None:
            cred.sign_count = sign_count
        self.credentials.setdefault(cred.credential_id, cred)

        cose_key = _cose_key(cred.private_key.public_key())
        if malformed_public_key:
            del cose_key[-3]  # drop y: still valid CBOR, no longer a usable EC2 key
        attested = (
            self.aaguid
            + len(cred.credential_id).to_bytes(2, "big")
            + cred.credential_id
            + cbor2.dumps(cose_key)
        )
        auth_data = (
            self._authenticator_data(
                rp_id=rp_id or effective_rp_id,
                sign_count=cred.sign_count,
                flags=FLAG_AT,
                user_present=user_present,
                user_verified=user_verified,
                backup_eligible=backup_eligible,
                backup_state=backup_state,
            )
            + attested
        )
        attestation_object = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = _client_data_json(
            type=type,
            challenge=b64url_decode(options["challenge"]) if challenge is None else challenge,
            origin=origin or self.origin,
            cross_origin=cross_origin,
            top_origin=top_origin,
        )

        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "attestationObject": b64url(attestation_object),
            "transports": ["internal"],
            "publicKeyAlgorithm": ES256,
            "publicKey": b64url(cred.spki_public_key),
            "authenticatorData": b64url(auth_data),
        }
        if malformed_public_key:
            del response["publicKey"]  # a browser returns null for a key it can't parse
        return _credential_json(cred.credential_id, response)

    # ---------------------------------------------------------------- authentication

    def authenticate(
        self,
        options: dict[str, Any],
        *,
        credential_id: bytes | None = None,
        user_handle: bytes | None = _UNSET,
        signature: bytes | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: bytes | None = None,
        type: str = "webauthn.get",
        cross_origin: bool = False,
        top_origin: str | None = None,
        user_present: bool = True,
        user_verified: bool = True,
        backup_eligible: bool | None = None,
        backup_state: bool | None = None,
        sign_count: int | None = None,
    ) -> dict[str, Any]:
        """Answer `navigator.credentials.get()`; return AuthenticationResponseJSON.

        `options` is PublicKeyCredentialRequestOptionsJSON. The credential used is
        `credential_id` if given, else the first of ours in allowCredentials, else (no
        allowCredentials: a discoverable-credential request) the first one we hold for
        the RP ID. Raises `NoCredential` if there is none.

        The stored counter is incremented and reported, unless `sign_count` is given:
        that value is reported instead and the stored counter is left alone.

        Overrides, each leaving the rest of the response valid and correctly signed:
        `origin`, `challenge` (bytes), `type`, `cross_origin`, `top_origin` (all in
        clientDataJSON); `rp_id` (hashed into authenticatorData); `user_present`,
        `user_verified`, `backup_eligible`, `backup_state` (flags); `sign_count`;
        `user_handle` (None omits it, b"" gives ""); `signature` (replaces the
        signature, which is otherwise ASN.1 DER ECDSA as browsers deliver it).
        """
        effective_rp_id = options.get("rpId") or self.rp_id
        cred = self._select(options, effective_rp_id, credential_id)
        if sign_count is None:
            cred.sign_count += 1
            sign_count = cred.sign_count

        auth_data = self._authenticator_data(
            rp_id=rp_id or effective_rp_id,
            sign_count=sign_count,
            flags=0,
            user_present=user_present,
            user_verified=user_verified,
            backup_eligible=backup_eligible,
            backup_state=backup_state,
        )
        client_data = _client_data_json(
            type=type,
            challenge=b64url_decode(options["challenge"]) if challenge is None else challenge,
            origin=origin or self.origin,
            cross_origin=cross_origin,
            top_origin=top_origin,
        )
        if signature is None:
            signed = auth_data + hashlib.sha256(client_data).digest()
            signature = cred.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))

        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if user_handle is _UNSET:
            user_handle = cred.user_handle
        if user_handle is not None:
            response["userHandle"] = b64url(user_handle)
        return _credential_json(cred.credential_id, response)

    # ----------------------------------------------------------------------- helpers

    def _select(
        self, options: dict[str, Any], rp_id: str, credential_id: bytes | None
    ) -> SoftCredential:
        """Pick the credential that answers an authentication request."""
        if credential_id is not None:
            if credential_id not in self.credentials:
                raise NoCredential(f"no credential {b64url(credential_id)}")
            return self.credentials[credential_id]
        allowed = options.get("allowCredentials") or []
        for descriptor in allowed:
            cred = self.credentials.get(b64url_decode(descriptor["id"]))
            if cred is not None:
                return cred
        if not allowed:
            for cred in self.credentials.values():
                if cred.rp_id == rp_id:
                    return cred
        raise NoCredential(f"no usable credential for RP {rp_id!r}")

    def _authenticator_data(
        self,
        *,
        rp_id: str,
        sign_count: int,
        flags: int,
        user_present: bool,
        user_verified: bool,
        backup_eligible: bool | None,
        backup_state: bool | None,
    ) -> bytes:
        """rpIdHash || flags || signCount (attested credential data is appended by callers)."""
        be = self.backup_eligible if backup_eligible is None else backup_eligible
        bs = self.backup_state if backup_state is None else backup_state
        flags |= (
            (FLAG_UP if user_present else 0)
            | (FLAG_UV if user_verified else 0)
            | (FLAG_BE if be else 0)
            | (FLAG_BS if bs else 0)
        )
        return (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + sign_count.to_bytes(4, "big")
        )


def _cose_key(public_key: ec.EllipticCurvePublicKey) -> dict[int, Any]:
    """COSE_Key map for a P-256 key, in CTAP2 canonical key order."""
    numbers = public_key.public_numbers()
    return {
        1: 2,  # kty: EC2
        3: ES256,  # alg
        -1: 1,  # crv: P-256
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }


def _client_data_json(
    *, type: str, challenge: bytes, origin: str, cross_origin: bool, top_origin: str | None
) -> bytes:
    """Serialise CollectedClientData the way browsers do (compact, fixed member order)."""
    data: dict[str, Any] = {
        "type": type,
        "challenge": b64url(challenge),
        "origin": origin,
        "crossOrigin": cross_origin,
    }
    if top_origin is not None:
        data["topOrigin"] = top_origin
    return json.dumps(data, separators=(",", ":")).encode()


def _credential_json(credential_id: bytes, response: dict[str, Any]) -> dict[str, Any]:
    """Wrap a response in the PublicKeyCredential JSON envelope."""
    return {
        "id": b64url(credential_id),
        "rawId": b64url(credential_id),
        "type": "public-key",
        "response": response,
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
    }
