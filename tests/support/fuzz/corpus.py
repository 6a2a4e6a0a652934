"""What the fuzz tier's case builders share: reproducible generation with Hypothesis, and the values
they draw from. The cases themselves are in support/fuzz/models.py and support/fuzz/inputs.py."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

INTERESTING_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, -1, -2, -(2**31)]

# Any value JSON or YAML can carry, small and nested, with the awkward ones (NaN, 2^70, '') included.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["mqtt://127.0.0.1:1", "0", "", "-1", "1e999", "~", "yes", "on", ":8080"]),
)
VALUES = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


class _Enough(Exception):
    """Stops a Hypothesis run once enough distinct cases are in."""


def generate(strategy: st.SearchStrategy, count: int, *, key: Callable = repr) -> list:
    """``count`` distinct values drawn by Hypothesis, reproducibly (derandomized, no database)."""
    found: dict = {}

    @settings(max_examples=count * 5, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(strategy)
    def collect(value) -> None:
        found.setdefault(key(value), value)
        if len(found) >= count:
            raise _Enough

    try:
        collect()
    except _Enough:
        pass
    assert len(found) >= count, f"Hypothesis found only {len(found)} distinct cases of {count}"
    return list(found.values())[:count]
