"""Frame selection helpers of the fit's data module."""

from gafkit.recon.data import evenly_spaced


def test_evenly_spaced_keeps_the_ends_and_everything_that_fits():
    ids = [3, 5, 8, 13, 21, 34, 55]
    assert evenly_spaced(ids, 4) == [3, 8, 21, 55]  # positions 0, 2, 4, 6
    assert evenly_spaced(ids, 7) == ids and evenly_spaced(ids, 99) == ids
    assert evenly_spaced(ids, 1) == [3]
