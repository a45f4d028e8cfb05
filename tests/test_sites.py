import pytest

from persona_vectors import Site
from persona_vectors.sites import as_sites


def test_hook_names_and_aliases():
    assert Site(14).hook_name == "blocks.14.hook_out"
    assert Site(14).tl_alias == "blocks.14.hook_resid_post"
    assert Site(3, "resid_pre").hook_name == "blocks.3.hook_in"
    assert Site(3).hidden_states_index == 4
    assert Site(3, "resid_pre").hidden_states_index == 3


@pytest.mark.parametrize("text,expected", [
    (5, Site(5)), ("5", Site(5)), ("resid_pre.2", Site(2, "resid_pre")),
    ("blocks.7.hook_out", Site(7)), ("blocks.7.hook_resid_pre", Site(7, "resid_pre")),
])
def test_parse(text, expected):
    assert Site.parse(text) == expected


def test_bad_sites():
    with pytest.raises(ValueError, match="non-negative"):
        Site(-1)
    with pytest.raises(ValueError, match="Cannot parse"):
        Site.parse("layer fourteen")
    with pytest.raises(ValueError, match="out of range.*30 layers"):
        as_sites([31], n_layers=30)
    with pytest.raises(ValueError, match="No layers"):
        as_sites([])


def test_as_sites_all_sorted_unique():
    assert as_sites("all", 3) == (Site(0), Site(1), Site(2))
    assert as_sites([2, 1, "2"]) == (Site(1), Site(2))
