"""Are the explainers named by title wherever a learner would otherwise read "004"?"""

from __future__ import annotations

import re

import pytest

from bncourse.explainers import EXPLAINERS, explainer_title, name_sources


def test_does_every_claims_row_name_its_explainers_in_words():
    from bncourse.experiments.claims_catalogue import CLAIMS

    for claim in CLAIMS:
        words = name_sources(claim.sources)
        assert words and not re.search(r"\b\d{3}\b", words), (claim.id, claim.sources, words)


def test_are_the_five_explainers_titled_and_an_unknown_number_named_in_the_error():
    assert list(EXPLAINERS) == ["000", "001", "002", "003", "004"]
    assert explainer_title(4) == explainer_title("004") and "Code360" in explainer_title("004")
    assert name_sources("000 003 (001)") == "CV blog, glossary article, and implied by SNS College notes"
    assert name_sources("all") == "all five explainers"
    with pytest.raises(KeyError, match="no explainer numbered '005'"):
        explainer_title("005")
