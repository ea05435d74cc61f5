"""Hypothesis strategies for hostile post records, shared by the parser and the member fuzz tests."""

from __future__ import annotations

import json
import re

from hypothesis import strategies as st

from contract.posts import MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TOPIC_CHARS, MAX_TOPICS

# Any code point, lone surrogates included (what "\udXXX" escapes in JSON decode to).
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)


class Digits:
    """An integer literal of ``n`` digits, written into the JSON text as such (Python cannot even build it
    as an int past 4,300 digits)."""

    def __init__(self, n: int) -> None:
        self.n = n


huge_int = st.integers(min_value=4301, max_value=6000).map(Digits)
# No subnormal floats: the model sets torch.set_flush_denormal(True) process-wide, and Hypothesis cannot
# draw subnormals then (the member fuzz test runs the model in-process).
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_int,
                         st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), any_text)
json_values = st.recursive(json_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(any_text, kids, max_size=4)), max_leaves=12)


def at_and_beyond(limit: int, char: str = "x") -> st.SearchStrategy[str]:
    """Strings of exactly ``limit`` and ``limit + 1`` characters (and tiny ones)."""
    return st.sampled_from([0, 1, limit - 1, limit, limit + 1]).map(lambda n: char * max(0, n))


field_values = {
    "id": st.one_of(at_and_beyond(MAX_ID_CHARS), any_text, json_values),
    "text": st.one_of(at_and_beyond(MAX_TEXT_CHARS), any_text, json_values),
    "topics": st.one_of(
        st.lists(st.one_of(at_and_beyond(MAX_TOPIC_CHARS, "t"), any_text), max_size=MAX_TOPICS + 2),
        st.sampled_from([[f"t{i}" for i in range(MAX_TOPICS)], [f"t{i}" for i in range(MAX_TOPICS + 1)]]),
        json_values),
    "image_url": st.one_of(st.just("https://example.com/a.png"), st.just("http://x"), any_text, json_values),
    "image_b64": st.one_of(st.just("aGVsbG8="), any_text, json_values),
    "created_at": st.one_of(st.just("2026-01-01T00:00:00Z"), st.integers(), huge_int, st.floats(allow_subnormal=False),
                            any_text, json_values),
    "aspect": st.one_of(at_and_beyond(1000), json_values),
    "lang": st.one_of(at_and_beyond(64), json_values),
}
post_like = st.fixed_dictionaries({}, optional=field_values).flatmap(
    lambda d: st.dictionaries(any_text, json_values, max_size=3).map(lambda extra: {**extra, **d}))


def dumps_hostile(value: object) -> bytes:
    """JSON bytes of ``value``; lone surrogates become ``\\udXXX`` escapes, as a hostile producer sends them,
    and every :class:`Digits` becomes a bare integer literal of that many digits."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=True,
                      default=lambda d: f"\x00digits:{d.n}\x00")
    return re.sub(r'"\\u0000digits:(\d+)\\u0000"', lambda m: "9" * int(m.group(1)), text).encode("ascii")


