"""Metrics against hand-computed values: the course's ROUGE/BLEU example, SQuAD exact match and
token F1, scikit-learn label metrics, perplexity, and `compute` over the registry."""

import math

import pytest
import sacrebleu

from tunewright.errors import ConfigError
from tunewright.eval.metrics import METRICS, MetricResult, compute, corpus_scores, exact_match, normalize_answer, \
    perplexity, rouge_l

PRED, REF = "It is very cold outside", "It is cold outside"  # the course example
LABEL_METRICS = {"accuracy", "macro_f1", "auc"}


def test_exact_match_trims_outer_whitespace_only():
    assert exact_match(" a b\n", "a b") == 1.0
    assert exact_match("a  b", "a b") == 0.0


def test_rouge_l_of_the_course_example():
    # LCS of "it is very cold outside" and "it is cold outside" is 4 tokens: P 4/5, R 4/4
    assert rouge_l("It is very cold outside", "It is cold outside") == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_corpus_scores_average_examples():
    scores = corpus_scores(["a b", "x"], ["a b", "y"])
    assert scores == {"exact_match": 0.5, "rouge_l": pytest.approx(0.5)}
    with pytest.raises(ValueError):
        corpus_scores([], [])


# ------------------------------------------------------------------ every registered metric

@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_returns_corpus_per_example_and_settings(name):
    if name == "auc":
        preds, refs = [0.9, 0.2, 0.6], [1, 0, 0]
    elif name in LABEL_METRICS:
        preds, refs = ["a", "b", "b"], ["a", "b", "a"]
    else:
        preds, refs = [PRED, "a b c", ""], [REF, "a b c", "x"]
    result = METRICS.get(name)(preds, refs)
    assert isinstance(result, MetricResult) and result.corpus and result.settings
    assert all(isinstance(v, float) and not math.isnan(v) for v in result.corpus.values())
    for values in result.per_example.values():
        assert len(values) == 3
    if name not in LABEL_METRICS:  # text metrics: per example and per corpus
        assert set(result.per_example) == set(result.corpus)
        best = max(result.corpus.values())
        assert all(v[1] == max(v) for v in result.per_example.values())  # the identical pair scores highest
        assert best > 0
    with pytest.raises(ValueError):
        METRICS.get(name)(preds, refs[:2])


# ------------------------------------------------------------------ ROUGE

def test_rouge1_of_the_course_example_gives_recall_1_precision_08():
    result = METRICS.get("rouge1")([PRED], [REF], precision_recall=True)
    assert result.corpus["rouge1_recall"] == 1.0
    assert result.corpus["rouge1_precision"] == pytest.approx(0.8)
    assert round(result.corpus["rouge1"], 3) == 0.889
    assert result.per_example["rouge1_precision"] == [pytest.approx(0.8)]


def test_rouge_gives_all_four_and_bigrams_by_hand():
    result = METRICS.get("rouge")([PRED], [REF])
    assert set(result.corpus) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    # bigrams: 2 of the prediction's 4 are in the reference's 3 -> P 1/2, R 2/3
    assert result.corpus["rouge2"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert "stemming off" in result.settings and "mean over examples" in result.settings


# ------------------------------------------------------------------ the course's worked examples, by hand

def _pr(name, pred, ref):
    c = METRICS.get(name)([pred], [ref], precision_recall=True).corpus
    return c[f"{name}_recall"], c[f"{name}_precision"], c[name]


def test_course_rouge2_recall_two_thirds_precision_half_f1_four_sevenths():
    # bigrams of the reference: it is, is cold, cold outside (3); of the output: it is, is very,
    # very cold, cold outside (4); shared: it is, cold outside (2)
    recall, precision, f1 = _pr("rouge2", PRED, REF)
    assert (recall, precision) == (pytest.approx(2 / 3), 0.5) and f1 == pytest.approx(4 / 7)


def test_course_clipped_rouge1_counts_a_repeated_word_once():
    # "cold" occurs once in the reference, so only one of the four "cold"s matches: 1/4
    recall, precision, f1 = _pr("rouge1", "cold cold cold cold", REF)
    assert (recall, precision, f1) == (0.25, 0.25, 0.25)


def test_course_rouge_l_is_the_four_token_subsequence_not_two():
    # the course prints LCS 2 (0.5 / 0.4 / 0.44); "it is cold outside" is common to both: 4 tokens
    recall, precision, f1 = _pr("rougeL", PRED, REF)
    assert (recall, precision) == (1.0, pytest.approx(0.8)) and round(f1, 3) == 0.889


TEA = "I am very happy to say that I am drinking a warm cup of tea."


@pytest.mark.parametrize("candidate, course, ours", [
    ("I am very happy that I am drinking a cup of tea.", 0.495, 53.88),
    ("I am very happy that I am drinking a warm cup of tea.", 0.730, 74.97),
    ("I am very happy to say that I am drinking a warm tea.", None, 77.21),  # a transcript's third candidate
    (TEA, 0.798, 100.0),  # the course's third candidate is the reference itself
])
def test_course_cup_of_tea_bleu_by_sacrebleu(candidate, course, ours):
    for name in ("bleu", "sentence_bleu"):
        got = METRICS.get(name)([candidate], [TEA]).corpus[name]
        assert round(got, 2) == ours
        if course is not None:  # the course's printed figures are not reproduced
            assert round(got / 100, 3) != course
    assert round(METRICS.get("sentence_bleu")([candidate], [TEA], smooth_method="none").corpus["sentence_bleu"], 2) == ours


def test_metric_options_change_the_score_and_are_recorded_in_the_settings():
    plain = compute(["rouge1", "bleu"], ["the cats were running"], ["the cat runs"])
    options = {"rouge1": {"use_stemmer": True}, "bleu": {"tokenize": "char", "smooth_method": "floor"}}
    stemmed = compute(["rouge1", "bleu"], ["the cats were running"], ["the cat runs"], options)
    assert stemmed["corpus"]["rouge1"] > plain["corpus"]["rouge1"]
    assert "stemming on" in stemmed["settings"]["rouge1"] and "stemming off" in plain["settings"]["rouge1"]
    assert "tok:char" in stemmed["settings"]["bleu"] and "smooth:floor" in stemmed["settings"]["bleu"]
    assert stemmed["corpus"]["bleu"] != plain["corpus"]["bleu"]


def test_rouge_lsum_matches_sentences_split_on_newlines():
    result = METRICS.get("rouge")(["a b\nc d"], ["c d\na b"])
    assert result.corpus["rougeL"] == pytest.approx(0.5)  # one LCS over the text: "a b" or "c d"
    assert result.corpus["rougeLsum"] == pytest.approx(1.0)  # union LCS per sentence: everything


def test_rouge_corpus_is_the_mean_and_several_references_take_the_best():
    result = METRICS.get("rouge1")([PRED, "x y"], [[REF, PRED], "z w"])
    assert result.per_example["rouge1"] == [1.0, 0.0]
    assert result.corpus["rouge1"] == 0.5


def test_rouge_stemming_is_an_option():
    plain = METRICS.get("rouge1")(["cats running"], ["cat run"])
    stemmed = METRICS.get("rouge1")(["cats running"], ["cat run"], use_stemmer=True)
    assert plain.corpus["rouge1"] == 0.0 and stemmed.corpus["rouge1"] == 1.0
    assert "stemming on" in stemmed.settings


# ------------------------------------------------------------------ BLEU and chrF

def test_sentence_bleu_of_the_course_example_with_and_without_smoothing():
    smoothed = METRICS.get("sentence_bleu")([PRED], [REF])
    assert round(smoothed.corpus["sentence_bleu"], 2) == 30.21
    assert "smooth:exp" in smoothed.settings
    plain = METRICS.get("sentence_bleu")([PRED], [REF], smooth_method="none")
    assert plain.corpus["sentence_bleu"] == 0.0  # no 3-gram shared beyond "cold outside": no 4-gram match
    assert "smooth:none" in plain.settings


def test_corpus_bleu_pools_ngrams_and_states_sacrebleus_signature():
    preds, refs = ["the cat sat on the mat", "a dog ran"], ["the cat sat on the mat", "the dog ran away"]
    result = METRICS.get("bleu")(preds, refs)
    assert result.corpus["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    # corpus BLEU is not the mean of sentence BLEUs (those are in per_example)
    assert result.corpus["bleu"] != pytest.approx(sum(result.per_example["bleu"]) / 2)
    assert result.per_example["bleu"][0] == pytest.approx(100.0)
    assert "tok:13a" in result.settings and f"version:{sacrebleu.__version__}" in result.settings
    assert round(METRICS.get("bleu")([PRED], [REF]).corpus["bleu"], 2) == 30.21


def test_bleu_takes_several_references_per_example():
    one = METRICS.get("bleu")(["a dog ran away today"], ["the dog ran off"])
    two = METRICS.get("bleu")(["a dog ran away today"], [["the dog ran off", "a dog ran away today"]])
    assert two.corpus["bleu"] == pytest.approx(100.0) and one.corpus["bleu"] < 50
    ragged = METRICS.get("bleu")(["a b c d", "e f g h"], [["a b c d"], ["x", "e f g h"]])
    assert ragged.corpus["bleu"] == pytest.approx(100.0)


def test_chrf_per_sentence_and_corpus():
    result = METRICS.get("chrf")([PRED, "abc"], [REF, "abc"])
    assert result.per_example["chrf"][0] == pytest.approx(sacrebleu.sentence_chrf(PRED, [REF]).score)
    assert result.per_example["chrf"][1] == pytest.approx(100.0)
    plus = METRICS.get("chrf")([PRED], [REF], word_order=2)
    assert plus.corpus["chrf"] != result.per_example["chrf"][0] and "nw:2" in plus.settings


# ------------------------------------------------------------------ SQuAD exact match and token F1

def test_normalized_exact_match_like_squad():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    result = METRICS.get("exact_match")(["The Cat!", "dog", "an apple"], ["cat", "cat", ["pear", "Apple."]])
    assert result.per_example["exact_match"] == [1.0, 0.0, 1.0]
    assert result.corpus["exact_match"] == pytest.approx(2 / 3)
    strict = METRICS.get("exact_match")(["The Cat!"], ["cat"], normalize=False)
    assert strict.corpus["exact_match"] == 0.0


def test_token_f1_by_hand():
    # normalized: [cat, sat] vs [cat, sat, down]: P 1, R 2/3 -> F1 0.8
    result = METRICS.get("token_f1")(["the cat sat", "", "x"], ["a cat sat down", "", "y"])
    assert result.per_example["token_f1"] == [pytest.approx(0.8), 1.0, 0.0]
    # repeated words count as often as they appear in both: [a a a] vs [a]: P 1/3, R 1
    assert METRICS.get("token_f1")(["x x x"], ["x"]).corpus["token_f1"] == pytest.approx(0.5)


# ------------------------------------------------------------------ label metrics

def test_accuracy_and_macro_f1_by_hand():
    truth, pred = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    acc = METRICS.get("accuracy")(pred, truth)
    assert acc.corpus["accuracy"] == 0.75 and acc.per_example["accuracy"] == [1.0, 0.0, 1.0, 1.0]
    # a: P 1, R 1/2 -> 2/3; b: P 2/3, R 1 -> 4/5; macro = mean
    assert METRICS.get("macro_f1")(pred, truth).corpus["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_binary_auc_by_hand_with_numbers_labels_and_two_columns():
    scores, truth = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # of the 4 (positive, negative) pairs, 3 rank the positive higher
    assert METRICS.get("auc")(scores, truth).corpus["auc"] == pytest.approx(0.75)
    words = ["no", "no", "yes", "yes"]
    assert METRICS.get("auc")(scores, words).corpus["auc"] == pytest.approx(0.75)  # "yes" > "no"
    assert METRICS.get("auc")(scores, words, pos_label="no").corpus["auc"] == pytest.approx(0.25)
    two = [[1 - s, s] for s in scores]
    assert METRICS.get("auc")(two, truth).corpus["auc"] == pytest.approx(0.75)


def test_multiclass_auc_is_the_mean_of_one_vs_rest():
    probs = [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.4, 0.1, 0.5], [0.5, 0.3, 0.2]]
    truth = [0, 1, 2, 2, 0, 1]
    one_vs_rest = [METRICS.get("auc")([p[c] for p in probs], [int(t == c) for t in truth]).corpus["auc"]
                   for c in range(3)]
    result = METRICS.get("auc")(probs, truth)
    assert result.corpus["auc"] == pytest.approx(sum(one_vs_rest) / 3)
    assert "one-vs-rest" in result.settings
    named = METRICS.get("auc")(probs, [["x", "y", "z"][t] for t in truth], labels=["x", "y", "z"])
    assert named.corpus["auc"] == pytest.approx(result.corpus["auc"])
    with pytest.raises(ValueError, match="labels"):
        METRICS.get("auc")(probs, [0, 1, 0, 1, 0, 1])  # two classes seen, three columns


def test_auc_of_one_class_is_nan_and_says_why():
    result = METRICS.get("auc")([0.2, 0.9], [1, 1])
    assert math.isnan(result.corpus["auc"]) and "undefined" in result.settings


def test_perplexity_is_exp_of_the_mean_loss():
    assert perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


# ------------------------------------------------------------------ compute

def test_compute_combines_metrics_and_states_each_setting():
    out = compute("rouge1, bleu,exact_match", [PRED, "yes"], [REF, "Yes."])
    assert set(out["corpus"]) == {"rouge1", "bleu", "exact_match"}
    assert out["corpus"]["exact_match"] == 0.5
    assert out["per_example"]["rouge1"] == [pytest.approx(0.8888889), 1.0]
    assert set(out["settings"]) == {"rouge1", "bleu", "exact_match"}
    with_options = compute(["sentence_bleu"], [PRED], [REF], options={"sentence_bleu": {"smooth_method": "none"}})
    assert with_options["corpus"]["sentence_bleu"] == 0.0


def test_compute_rejects_an_unknown_name_before_any_work():
    with pytest.raises(ConfigError, match='did you mean "rouge"'):
        compute(["bleu", "roug"], [PRED], [REF])
