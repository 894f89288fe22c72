"""The selection test's pure parts: one sample per prompt by a score, and the ratio to random."""
import numpy as np
import pytest

from jaxdistill.experiments.selection import pick_one_per_prompt, ratio_to_random


def test_pick_takes_the_best_eligible_sample_and_breaks_ties_at_random():
    scores = np.array([[1.0, 5.0, 3.0], [2.0, 2.0, 0.0], [9.0, 9.0, 9.0]])
    eligible = np.array([[True, False, True], [True, True, True], [False, False, False]])
    rng = np.random.default_rng(0)
    assert pick_one_per_prompt(scores, eligible, +1, rng).tolist()[::2] == [2, -1]  # 5.0 is not eligible
    assert pick_one_per_prompt(scores, eligible, -1, rng).tolist()[:2] == [0, 2]
    ties = {int(pick_one_per_prompt(scores, eligible, +1, np.random.default_rng(s))[1]) for s in range(40)}
    assert ties == {0, 1}  # both maxima get picked, the lower score never
    with pytest.raises(ValueError, match="direction"):
        pick_one_per_prompt(scores, eligible, 0, rng)


def test_ratio_to_random_and_its_standard_error():
    ratio, se = ratio_to_random([0.2, 0.3, 0.4], [0.4, 0.4, 0.4])
    assert ratio == pytest.approx(0.75)
    assert se == pytest.approx(0.75 * (0.1 / np.sqrt(3)) / 0.3)  # the random set has no spread here
    assert ratio_to_random([0.5], [0.25]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="scored 0"):
        ratio_to_random([0.1], [0.0])
