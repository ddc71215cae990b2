"""`mail_search.score`: bm25 over the candidates, a word counted once per field it is in."""

from __future__ import annotations

from vibe_ensemble.store.mail_search import score


def test_the_subject_outweighs_the_body_and_more_words_outweigh_fewer() -> None:
    same = (10, 100)  # every candidate's subject and body lengths are equal: only presence counts
    candidates = [(1, same), (2, same), (3, same), (4, same)]
    in_body, in_subject, in_both = [(1, 0, 1)], [(2, 0, 0)], [(3, 0, 0), (3, 0, 1)]
    assert score(candidates, in_body + in_subject + in_both, 1) == [3, 2, 1, 4]
    # Two words as common as each other: both in the body beats one in the subject.
    both_words = [(1, 0, 1), (1, 1, 1), (2, 0, 0), (3, 1, 0)]
    assert score(candidates, both_words, 2) == [1, 3, 2, 4]


def test_a_rarer_word_weighs_more_and_equals_go_newest_first() -> None:
    candidates = [(i, (10, 50)) for i in range(1, 11)]
    common = [(i, 0, 1) for i in range(1, 11)]  # word 0 in every body
    rare = [(3, 1, 1)]  # word 1 in one body
    assert score(candidates, common + rare, 2) == [3, 10, 9, 8, 7, 6, 5, 4, 2, 1]


def test_shorter_fields_rank_higher() -> None:
    candidates = [(1, (10, 40)), (2, (10, 160)), (3, (10, 90))]
    present = [(1, 0, 1), (2, 0, 1), (3, 0, 1)]
    assert score(candidates, present, 1) == [1, 3, 2]


def test_rows_that_are_not_candidates_are_ignored() -> None:
    assert score([(5, (3, 3))], [(6, 0, 0), (5, 0, 1)], 1) == [5]
    assert score([(5, (3, 3)), (7, (3, 3))], [], 1) == [7, 5]
