"""Per-profile data keys (crypto-shredding).

Every profile's PII is encrypted with its own AES-256-GCM data key (DEK). The DEK is stored
in ``subject_keys`` wrapped (encrypted) by the project's master key, which lives in the key
file outside the database. Erasing a person deletes their DEK: any ciphertext left behind
(a backup, a copied file, a stale replica) can no longer be decrypted by anyone.

Ciphertext format: ``b"\\x01" + nonce(12) + AES-GCM(DEK)``. Blobs written before per-profile
keys existed (master key, no prefix) still decrypt.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from microseg.errors import ConfigError
from microseg.privacy.crypto import NONCE_BYTES, KeyRing
from microseg.store import Store, utcnow

ENVELOPE = b"\x01"


def _wrap_context(profile_id: str) -> str:
    return f"dek|{profile_id}"


def load_subject_keys(store: Store, keys: KeyRing, profile_ids: Iterable[str]) -> dict[str, bytes]:
    """The unwrapped DEKs of the given profiles that have one (profile id -> 32-byte key)."""
    wanted = sorted({str(p) for p in profile_ids})
    if not wanted:
        return {}
    if len(wanted) == 1:  # the per-request path: a primary-key point lookup
        rows = store.rows(
            "SELECT profile_id, wrapped_key, master_key_id FROM subject_keys WHERE profile_id = ?",
            wanted,
        )
    else:
        rows = store.rows(
            "SELECT profile_id, wrapped_key, master_key_id FROM subject_keys"
            " WHERE list_contains(?, profile_id)",
            [wanted],
        )
    return {str(pid): _unwrap(keys, str(pid), bytes(blob), str(kid)) for pid, blob, kid in rows}


def _unwrap(keys: KeyRing, profile_id: str, blob: bytes, master_key_id: str) -> bytes:
    try:
        return base64.b64decode(keys.decrypt(blob, _wrap_context(profile_id)))
    except InvalidTag:
        raise ConfigError(
            f"the data key of profile {profile_id} was wrapped by master key"
            f" '{master_key_id}', not by this key file's '{keys.key_id}' (wrong key file?)"
        ) from None


def ensure_subject_keys(
    store: Store, keys: KeyRing, profile_ids: Iterable[str]
) -> dict[str, bytes]:
    """DEKs of the given profiles, creating (and storing, wrapped) the missing ones."""
    wanted = sorted({str(p) for p in profile_ids})
    have = load_subject_keys(store, keys, wanted)
    missing = [p for p in wanted if p not in have]
    if missing:
        _insert_wrapped(store, keys, {p: secrets.token_bytes(32) for p in missing})
        # another writer may have won a race: read back what is stored
        have.update(load_subject_keys(store, keys, missing))
    return have


def _insert_wrapped(store: Store, keys: KeyRing, fresh: dict[str, bytes]) -> None:
    """Insert DEKs wrapped by the master key (bulk, via Arrow; an existing key wins)."""
    table = pa.table(
        {
            "profile_id": pa.array(list(fresh), pa.string()),
            "wrapped_key": pa.array(
                [
                    keys.encrypt(base64.b64encode(k).decode(), _wrap_context(p))
                    for p, k in fresh.items()
                ],
                pa.binary(),
            ),
        }
    )
    with store.lock:
        store.con.register("_ms_new_deks", table)
        try:
            store.con.execute(
                "INSERT INTO subject_keys SELECT profile_id, wrapped_key, ?, ? FROM _ms_new_deks"
                " ON CONFLICT DO NOTHING",
                [keys.key_id, utcnow()],
            )
        finally:
            store.con.unregister("_ms_new_deks")


def encrypt_with(dek: bytes, plaintext: str, context: str) -> bytes:
    """Encrypt under a profile's DEK (context bound as associated data)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return ENVELOPE + nonce + AESGCM(dek).encrypt(nonce, plaintext.encode(), context.encode())


def decrypt_with(keys: KeyRing, dek: bytes | None, blob: bytes, context: str) -> str:
    """Decrypt a vault blob: DEK envelope when the profile has a key, else the legacy format.

    Raises ``cryptography.exceptions.InvalidTag`` when the blob cannot be decrypted (e.g. its
    DEK was shredded)."""
    if dek is not None and blob[:1] == ENVELOPE:
        body = blob[1:]
        try:
            return (
                AESGCM(dek)
                .decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], context.encode())
                .decode()
            )
        except InvalidTag:
            pass  # a legacy blob whose random nonce happens to start with the prefix
    return keys.decrypt(blob, context)


def profile_of_context(context: str) -> str:
    """The profile id part of a ``profile_id|field`` context."""
    return context.split("|", 1)[0]


def shred(store: Store, profile_ids: Iterable[str]) -> int:
    """Delete the DEKs of these profiles; returns how many were deleted."""
    wanted = sorted({str(p) for p in profile_ids})
    if not wanted:
        return 0
    n = int(
        store.scalar(
            "SELECT count(*) FROM subject_keys WHERE list_contains(?, profile_id)", [wanted]
        )
    )
    store.execute("DELETE FROM subject_keys WHERE list_contains(?, profile_id)", [wanted])
    return n


class DekCache:
    """DEKs for one bulk write (e.g. a profile import's SQL UDF), created lazily in memory.

    ``preload`` reads the stored keys of the profiles about to be written, ``encrypt_many``
    encrypts (inventing a key for a profile without one) and ``persist`` stores the new keys,
    wrapped, in the same transaction as the ciphertexts."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self.deks: dict[str, bytes] = {}
        self.new: dict[str, bytes] = {}

    def preload(self, store: Store, profile_ids: Iterable[str]) -> None:
        self.deks.update(load_subject_keys(store, self.keys, profile_ids))

    def preload_table(self, store: Store, table: str) -> None:
        """Load the stored DEKs of the profiles of a (fixed-name) staging table."""
        rows = store.rows(
            "SELECT k.profile_id, k.wrapped_key, k.master_key_id FROM subject_keys k SEMI JOIN "
            + table
            + " t ON t.profile_id = k.profile_id"
        )
        for pid, blob, kid in rows:
            self.deks[str(pid)] = _unwrap(self.keys, str(pid), bytes(blob), str(kid))

    def dek(self, profile_id: str) -> bytes:
        key = self.deks.get(profile_id)
        if key is None:
            key = self.deks[profile_id] = self.new[profile_id] = secrets.token_bytes(32)
        return key

    def encrypt_many(self, values: list[str | None], contexts: list[str]) -> list[bytes | None]:
        """Each value under the DEK of its ``profile_id|field`` context's profile."""
        return [
            None if v is None else encrypt_with(self.dek(profile_of_context(c)), v, c)
            for v, c in zip(values, contexts, strict=True)
        ]

    def persist(self, store: Store) -> int:
        """Store the keys created since the last call; returns how many."""
        if not self.new:
            return 0
        _insert_wrapped(store, self.keys, self.new)
        n = len(self.new)
        self.new = {}
        return n
