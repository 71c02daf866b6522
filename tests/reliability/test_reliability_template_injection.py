"""Template injection through the stored-content path (ContentRepo.save -> render_block).

tests/personalize/test_template_injection.py covers templates parsed from files and rendered
with render_template. This adds the path content takes in production: blocks saved to the
store and rendered per profile, and second-order injection (profile *data* that looks like a
template must be printed, never evaluated).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from markupsafe import escape

from microseg.errors import DefinitionError
from microseg.personalize.content import BlockSpec, ContentRepo, render_block
from microseg.store import Store

SSTI = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ self.__init__.__globals__ }}",
    "{{ name.__class__.__base__.__subclasses__() }}",
    "{{ name|attr('__class__') }}",
    "{% for x in range(10**9) %}{{ x }}{% endfor %}",
    "{% for a in range(10**4) %}{% for b in range(10**4) %}.{% endfor %}{% endfor %}",
    "{{ range(10**9)|list }}",
    "{{ 'x' * 10**9 }}",
    "{{ 9**9**9 }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(name) }}",
    "{{ '%s%s%s%s%n' % (1, 2, 3, 4) }}",
    "{{ '{:>1000000000}'.format('x') }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]
LEAKS = ("<class", "__globals__", "function", "module", "builtins", "root:", "Popen")


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    s = Store(None)  # in memory, migrated
    yield s
    s.close()


@pytest.fixture
def repo(store: Store) -> ContentRepo:
    store.execute("DELETE FROM content_versions")
    return ContentRepo(store)


def _block(text: str) -> BlockSpec:
    return BlockSpec.model_validate(
        {"variants": [{"id": "web", "channel": "web", "text": text, "html": f"<p>{text}</p>"}]}
    )


@pytest.mark.parametrize("payload", SSTI)
def test_payload_saved_as_content_is_refused_or_inert(repo: ContentRepo, payload: str) -> None:
    try:
        version = repo.save("promo", _block("Hi " + payload))
    except DefinitionError as err:
        assert err.problems and all(p.message for p in err.problems)
        assert repo.names() == []  # nothing stored
        return
    started = time.perf_counter()
    out = render_block(repo.get("promo", version), {"name": "Ann"})
    assert time.perf_counter() - started < 5, "render must be bounded"
    shown = f"{out.text} {out.html}"
    assert not any(leak in shown for leak in LEAKS), shown[:300]


@pytest.mark.parametrize("payload", [*SSTI, "{{ 7*7 }}", "${7*7}", "#{7*7}", "%s%n%x"])
def test_profile_data_that_looks_like_a_template_is_printed_not_evaluated(
    repo: ContentRepo, payload: str
) -> None:
    version = repo.save("hello", _block("Hello {{ name }}!"))
    out = render_block(repo.get("hello", version), {"name": payload})
    assert out.ok, out.errors
    assert out.text == f"Hello {payload}!"  # text part: printed as is, never evaluated
    assert out.html == f"<p>Hello {escape(payload)}!</p>"  # html part: escaped data
