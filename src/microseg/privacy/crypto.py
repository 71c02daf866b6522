"""Keys kept outside the database; HMAC tokens and AES-256-GCM encryption for PII."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from microseg.errors import ConfigError

NONCE_BYTES = 12


def normalise_email(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True)
class KeyRing:
    """The project's secret keys: one for HMAC tokens, one for AES-256-GCM."""

    hmac_key: bytes
    data_key: bytes
    key_id: str

    @classmethod
    def generate(cls) -> KeyRing:
        hk, dk = secrets.token_bytes(32), secrets.token_bytes(32)
        return cls(hk, dk, hashlib.sha256(hk + dk).hexdigest()[:12])

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Read the key file, creating it (mode 0600) on first use."""
        env = os.environ.get("MICROSEG_KEY_FILE")
        if env:
            path = Path(env)
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                return cls(
                    base64.b64decode(raw["hmac_key"]),
                    base64.b64decode(raw["data_key"]),
                    raw["key_id"],
                )
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"key file {path} is damaged: {exc}") from None
        ring = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "key_id": ring.key_id,
                    "hmac_key": base64.b64encode(ring.hmac_key).decode(),
                    "data_key": base64.b64encode(ring.data_key).decode(),
                },
                fh,
            )
        return ring

    def token(self, value: str, kind: str = "email") -> str:
        """Deterministic keyed token (HMAC-SHA256) for joining without storing the value."""
        digest = hmac.new(self.hmac_key, f"{kind}:{value}".encode(), hashlib.sha256)
        return "tok_" + digest.hexdigest()[:32]

    def encrypt(self, plaintext: str, context: str = "") -> bytes:
        """AES-256-GCM; the context (e.g. profile id + field) is bound as associated data."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.data_key).encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str = "") -> str:
        nonce, body = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        return AESGCM(self.data_key).decrypt(nonce, body, context.encode()).decode()
