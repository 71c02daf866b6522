"""Privacy-preserving match keys and probabilistic profile matching.

Design (documented in the module so the choices are reviewable):

* PII (names, phones, emails, addresses) is never stored in clear. For every attribute used
  in probabilistic matching (``settings.identity.probabilistic.fields``) the import writes
  *match keys* to ``match_keys``: an HMAC token of the normalised value (``exact``) and, for
  name-like fields, an HMAC token of its Soundex code (``phonetic``), so "Jon"/"John" or
  "Smith"/"Smyth" still agree without anyone being able to read the name back.
* Candidate pairs come from *blocking*: two profiles are compared only when they agree on the
  coarse key (phonetic token for names, exact token otherwise) of at least two matching
  fields. Blocks larger than ``MAX_BLOCK`` (e.g. everyone called Smith in one postcode of a
  huge city) are skipped and counted, which keeps the work near-linear.
* Each candidate pair gets a weighted agreement score: for every field both profiles have,
  agreement is 1 for equal exact tokens; for name-like fields the Jaro-Winkler similarity of
  the decrypted values (in memory only, when the key ring is given; kept when >= 0.85) or 0.8
  for a phonetic-only agreement; else 0. score = sum(w * agreement) / sum(w of fields both
  have), and a pair is only scored when those fields carry >= ``MIN_COVERAGE`` of the total
  weight (one agreeing surname is never enough). Pairs with score >= threshold are merged by
  the resolver under the same guards as deterministic links.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from rapidfuzz.distance import JaroWinkler

from microseg.config.models import ProjectSettings
from microseg.privacy.audit import audit_pii_read
from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.privacy.keys import decrypt_with, load_subject_keys
from microseg.store import Store

NAME_LIKE_FIELDS: frozenset[str] = frozenset(
    {"first_name", "last_name", "middle_name", "full_name", "name", "city", "street", "address"}
)
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_BLOCK = 100
MIN_COVERAGE = 0.6
FUZZY_MIN = 0.85
PHONETIC_AGREEMENT = 0.8
_SOUNDEX = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


def _fold(value: str) -> str:
    text = unicodedata.normalize("NFKD", value)
    return "".join(c for c in text if not unicodedata.combining(c)).strip().lower()


def normalise(field_name: str, value: object) -> str | None:
    """Canonical form of a matching value (None when it carries nothing to match on)."""
    if value is None:
        return None
    raw = str(value)
    if field_name == "email":
        email = normalise_email(raw)
        return email if EMAIL_RE.match(email) else None
    text = _fold(raw)
    if "phone" in field_name or "mobile" in field_name:
        digits = re.sub(r"\D", "", text)
        return digits[-10:] if len(digits) >= 7 else None
    if "postal" in field_name or "zip" in field_name or "postcode" in field_name:
        return re.sub(r"[^0-9a-z]", "", text) or None
    if field_name in NAME_LIKE_FIELDS:
        return re.sub(r"\s+", " ", re.sub(r"[^a-z ]", " ", text)).strip() or None
    return re.sub(r"\s+", " ", text) or None


def soundex(text: str) -> str:
    """American Soundex code of a name ('' when it has no letters)."""
    letters = [c for c in _fold(text) if "a" <= c <= "z"]
    if not letters:
        return ""
    out = letters[0].upper()
    prev = _SOUNDEX.get(letters[0], "")
    for c in letters[1:]:
        code = _SOUNDEX.get(c, "")
        if code and code != prev:
            out += code
        if c not in "hw":
            prev = code
    return (out + "000")[:4]


def exact_token(keys: KeyRing, field_name: str, value: object) -> str | None:
    """HMAC token of the normalised value; emails use the same token as event import."""
    norm = normalise(field_name, value)
    if norm is None:
        return None
    return keys.token(norm, "email" if field_name == "email" else field_name)


def phonetic_token(keys: KeyRing, field_name: str, value: object) -> str | None:
    """HMAC token of the Soundex code (name-like fields only)."""
    norm = normalise(field_name, value)
    if norm is None or field_name not in NAME_LIKE_FIELDS:
        return None
    code = soundex(norm)
    return keys.token(code, field_name + ":phonetic") if code else None


@dataclass(frozen=True)
class Candidate:
    """A scored pair of active profiles."""

    a: str
    b: str
    score: float
    agreement: dict[str, float] = field(default_factory=dict)


@dataclass
class MatchStats:
    """What the probabilistic pass looked at."""

    profiles: int = 0
    pairs_compared: int = 0
    blocks_skipped: int = 0
    matches: int = 0


def candidate_pairs(store: Store, fields: list[str]) -> tuple[pd.DataFrame, int]:
    """Root pairs (a < b) sharing the coarse keys of at least two fields; skipped blocks."""
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_ckeys AS SELECT * FROM (" + _CKEYS_SQL + ")",
        [fields, sorted(NAME_LIKE_FIELDS), sorted(NAME_LIKE_FIELDS)],
    )
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_blocks AS
        SELECT c1.root, c1.field || '=' || c1.ckey || '&' || c2.field || '=' || c2.ckey AS bkey
        FROM _ms_ckeys c1 JOIN _ms_ckeys c2 ON c1.root = c2.root AND c1.field < c2.field
        """
    )
    skipped = int(
        store.scalar(
            "SELECT count(*) FROM (SELECT bkey FROM _ms_blocks GROUP BY bkey"
            " HAVING count(DISTINCT root) > ?)",
            [MAX_BLOCK],
        )
        or 0
    )
    pairs = store.df(
        """
        WITH ok AS (SELECT bkey FROM _ms_blocks GROUP BY bkey
                    HAVING count(DISTINCT root) BETWEEN 2 AND ?)
        SELECT DISTINCT x.root AS a, y.root AS b
        FROM _ms_blocks x JOIN _ms_blocks y ON x.bkey = y.bkey AND x.root < y.root
        WHERE x.bkey IN (SELECT bkey FROM ok)
        """,
        [MAX_BLOCK],
    )
    store.execute("DROP TABLE IF EXISTS _ms_blocks")
    store.execute("DROP TABLE IF EXISTS _ms_ckeys")
    return pairs, skipped


_CKEYS_SQL = """
    SELECT r.root, m.field, m.token AS ckey
    FROM match_keys m JOIN _ms_roots r ON r.profile_id = m.profile_id
    WHERE list_contains(?, m.field)
      AND ((list_contains(?, m.field) AND m.kind = 'phonetic')
           OR (NOT list_contains(?, m.field) AND m.kind = 'exact'))
    GROUP BY ALL
"""


def _clear_values(
    store: Store, settings: ProjectSettings, keys: KeyRing, roots: Iterable[str], fields: list[str]
) -> dict[tuple[str, str], set[str]]:
    """Normalised clear values of name-like fields per (root, field), decrypted in memory."""
    name_fields = [f for f in fields if f in NAME_LIKE_FIELDS]
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    if not name_fields:
        return out
    wanted = sorted(set(roots))
    pii = [f for f in name_fields if f in settings.privacy.pii_attributes]
    plain = [f for f in name_fields if f not in settings.privacy.pii_attributes]
    if pii:
        rows = store.rows(
            "SELECT r.root, v.profile_id, v.field, v.ciphertext FROM pii_vault v"
            " JOIN _ms_roots r ON r.profile_id = v.profile_id"
            " WHERE list_contains(?, v.field) AND list_contains(?, r.root)",
            [pii, wanted],
        )
        deks = load_subject_keys(store, keys, {str(r[1]) for r in rows})
        for root, pid, fname, blob in rows:
            clear = decrypt_with(keys, deks.get(pid), bytes(blob), pii_context(pid, fname))
            norm = normalise(fname, clear)
            if norm:
                out[(root, fname)].add(norm)
        audit_pii_read(store, "identity", [str(r[1]) for r in rows], pii, purpose="matching")
    if plain:
        rows = store.rows(
            "SELECT r.root, a.name, a.value FROM profile_attributes a"
            " JOIN _ms_roots r ON r.profile_id = a.profile_id"
            " WHERE list_contains(?, a.name) AND list_contains(?, r.root)",
            [plain, wanted],
        )
        for root, fname, value in rows:
            norm = normalise(fname, value)
            if norm:
                out[(root, fname)].add(norm)
    return out


def pii_context(profile_id: str, field_name: str) -> str:
    """Associated data binding a PII ciphertext to its profile and field."""
    return f"{profile_id}|{field_name}"


def score_pairs(
    store: Store,
    settings: ProjectSettings,
    pairs: pd.DataFrame,
    keys: KeyRing | None = None,
) -> list[Candidate]:
    """Weighted agreement score of each candidate root pair (see module docstring)."""
    weights = settings.identity.probabilistic.fields
    fields = list(weights)
    total = sum(weights.values())
    if pairs.empty or total <= 0:
        return []
    roots = sorted(set(pairs["a"]) | set(pairs["b"]))
    tokens: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for root, fname, kind, token in store.rows(
        "SELECT r.root, m.field, m.kind, m.token FROM match_keys m"
        " JOIN _ms_roots r ON r.profile_id = m.profile_id"
        " WHERE list_contains(?, m.field) AND list_contains(?, r.root)",
        [fields, roots],
    ):
        tokens[(root, fname, kind)].add(token)
    clear = _clear_values(store, settings, keys, roots, fields) if keys else {}
    out = []
    for a, b in pairs.itertuples(index=False):
        present = 0.0
        agreed = 0.0
        agreement: dict[str, float] = {}
        for fname, w in weights.items():
            ea, eb = tokens.get((a, fname, "exact")), tokens.get((b, fname, "exact"))
            if not ea or not eb:
                continue
            present += w
            if ea & eb:
                agree = 1.0
            else:
                agree = 0.0
                if fname in NAME_LIKE_FIELDS:
                    pa, pb = (
                        tokens.get((a, fname, "phonetic"), set()),
                        tokens.get((b, fname, "phonetic"), set()),
                    )
                    if pa & pb:
                        agree = PHONETIC_AGREEMENT
                    ca, cb = clear.get((a, fname)), clear.get((b, fname))
                    if ca and cb:
                        best = max(JaroWinkler.similarity(x, y) for x in ca for y in cb)
                        if best >= FUZZY_MIN:
                            agree = max(agree, best)
            agreement[fname] = round(agree, 4)
            agreed += w * agree
        if present < MIN_COVERAGE * total or present == 0:
            continue
        out.append(Candidate(a, b, agreed / present, agreement))
    return out
