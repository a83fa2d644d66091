from __future__ import annotations

import uuid

import pytest

from herald.security.crypto import (
    CryptoError,
    DecryptionError,
    KeyRing,
    TokenBinding,
    UnknownKey,
    generate_key,
    key_id_of,
)


def ring(spec: str | None = None) -> KeyRing:
    return KeyRing.parse(spec or f"new:{generate_key()},old:{generate_key()}")


def binding(**overrides: object) -> TokenBinding:
    values: dict[str, object] = {
        "workspace_id": uuid.UUID(int=1),
        "provider": "x",
        "integration_id": uuid.UUID(int=2),
    }
    values.update(overrides)
    return TokenBinding(**values)  # type: ignore[arg-type]


def test_round_trip_names_the_active_key_and_hides_the_plaintext() -> None:
    keys = ring()
    sealed = keys.seal("secret-access-token", binding())
    assert key_id_of(sealed) == "new"
    assert "secret-access-token" not in sealed
    assert keys.open(sealed, binding()) == "secret-access-token"


@pytest.mark.parametrize(
    "other",
    [
        {"integration_id": uuid.UUID(int=3)},
        {"workspace_id": uuid.UUID(int=9)},
        {"provider": "mastodon"},
    ],
)
def test_ciphertext_copied_into_another_row_fails_to_decrypt(other: dict[str, object]) -> None:
    keys = ring()
    sealed = keys.seal("secret-access-token", binding())
    with pytest.raises(DecryptionError) as info:
        keys.open(sealed, binding(**other))
    assert "secret-access-token" not in str(info.value)


def test_tampered_ciphertext_fails() -> None:
    keys = ring()
    sealed = keys.seal("token", binding())
    head, body = sealed.rsplit(".", 1)
    flipped = head + "." + ("A" if body[0] != "A" else "B") + body[1:]
    with pytest.raises(DecryptionError):
        keys.open(flipped, binding())


def test_rotation_old_ciphertexts_open_and_reseal_under_the_new_key() -> None:
    old_key, new_key = generate_key(), generate_key()
    before = KeyRing.parse(f"old:{old_key}")
    sealed = before.seal("token", binding())
    after = KeyRing.parse(f"new:{new_key},old:{old_key}")
    assert after.open(sealed, binding()) == "token"
    resealed = after.reseal(sealed, binding())
    assert key_id_of(resealed) == "new"
    assert after.open(resealed, binding()) == "token"
    # A process still on the old ring (mid-rollout) lacks the new key: not a tampered token.
    with pytest.raises(UnknownKey, match="key 'new', which this process's HERALD_TOKEN_KEYS lacks"):
        before.open(resealed, binding())


def test_a_key_id_that_no_ring_could_hold_is_a_bad_ciphertext_not_a_missing_key() -> None:
    keys = KeyRing.parse(f"k1:{generate_key()}")
    sealed = keys.seal("token", binding())
    forged = sealed.replace(".k1.", ".no such key!.", 1)
    with pytest.raises(DecryptionError, match="unknown key") as raised:
        keys.open(forged, binding())
    assert not isinstance(raised.value, UnknownKey)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "holds no key"),
        ("nokid", "kid:base64key"),
        ("k:" + "A" * 10, "32 bytes"),
        ("bad kid:" + "A" * 43, "key id"),
        # written the wrong way round: the key where its id goes
        ("AAAAAAAAAA" + "B" * 33 + ":k2", "key id"),
    ],
)
def test_malformed_key_rings_are_refused_without_echoing_material(spec: str, message: str) -> None:
    with pytest.raises(CryptoError, match=message) as info:
        KeyRing.parse(spec)
    assert "AAAAAAAAAA" not in str(info.value)


@pytest.mark.parametrize("garbage", ["", "v1.k", "v2.k.a.b", "v1.k.!!.??"])
def test_garbage_ciphertext_is_a_decryption_error(garbage: str) -> None:
    with pytest.raises(DecryptionError):
        ring().open(garbage, binding())
