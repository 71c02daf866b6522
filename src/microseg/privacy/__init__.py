"""Privacy: keys, tokenisation and encryption of PII, consent, erasure, audit."""

from microseg.privacy.crypto import KeyRing

__all__ = ["KeyRing"]
