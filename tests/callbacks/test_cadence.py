from types import SimpleNamespace

from lit_codec.callbacks.cadence import ValidationCadence


def test_one_pass_out_of_every_n_starting_with_the_first_and_never_the_sanity_check():
    cadence = ValidationCadence(every=3)
    sanity, real = SimpleNamespace(sanity_checking=True), SimpleNamespace(sanity_checking=False)
    assert not cadence.due(sanity)
    assert [cadence.due(real) for _ in range(7)] == [True, False, False, True, False, False, True]
    assert not cadence.due(sanity) and cadence.passes == 7
    assert all(ValidationCadence(every=0).due(real) for _ in range(3))  # 0 or 1: every pass
