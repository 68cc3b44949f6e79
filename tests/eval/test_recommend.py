"""`tunewright recommend`: hit@k and NDCG@k by hand, and a ranking that is the model's own P(Yes)
order over exactly the items the user has not rated, computed here by brute force."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunewright.cli import main
from tunewright.eval.recommend import hit_at_k, ndcg_at_k, recommend


def test_hit_and_ndcg_by_hand():
    ranked = ["a", "b", "c", "d"]
    assert hit_at_k(ranked, {"c"}, 2) == 0 and hit_at_k(ranked, {"c"}, 3) == 1
    # likes at ranks 2 and 4, k=4: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, {"b", "d"}, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(ranked, {"a"}, 1) == 1.0 and math.isnan(ndcg_at_k(ranked, set(), 3))


def _ratings(tmp_path):
    rows = []
    for u, user in enumerate(["ada", "bo"]):
        for t in range(8):
            rows.append({"user": user, "item": f"The Item {(t * 3 + u) % 11} (a film)", "rating": [5, 1, 4, 2][t % 4],
                         "time": t})
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_ranking_is_the_models_p_yes_over_unrated_items(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, rows = _ratings(tmp_path)
    run = tiny_model_dir("llama")  # a plain model folder stands in for a run: prompted raw, as it would train
    got = recommend(run, path, "ada", k=3)
    ada = [r for r in rows if r["user"] == "ada"]
    history = {r["item"] for r in ada[:6]}  # 8 ratings: the last 2 (20%, rounded) are held out, none validated
    assert {item for item, _ in got["ranked"]} == {r["item"] for r in rows} - history
    assert got["held_out_likes"] == sorted({r["item"] for r in ada[6:] if r["rating"] >= 4} - history)

    model, tok = AutoModelForCausalLM.from_pretrained(run).eval(), AutoTokenizer.from_pretrained(run)
    from tunewright.data.ratings import RatingsOptions, history_prompt, read_ratings, split_by_time
    parts = split_by_time(read_ratings(path, RatingsOptions()), RatingsOptions())["ada"]

    def p_yes(item):  # log p(label tokens | prompt) by a full forward per label, softmax over the two
        prompt = tok(history_prompt(parts["train"] + parts["validation"], item, RatingsOptions()))["input_ids"]
        scores = []
        for label in ("No", "Yes"):
            ids = tok(label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
            scores.append(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(ids)))
        return float(torch.softmax(torch.tensor(scores), -1)[1])

    for item, p in got["ranked"]:
        assert p == pytest.approx(p_yes(item), abs=1e-5)
    assert [p for _, p in got["ranked"]] == sorted((p for _, p in got["ranked"]), reverse=True)

    assert main(["recommend", run, "--ratings", str(path), "--user", "ada", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("1. ") and got["ranked"][0][0] in lines[0]
    assert lines[-1].startswith(f"hit@3 {got['hit@3']:.0f}, NDCG@3 {got['ndcg@3']:.3f}")
    assert main(["recommend", run, "--ratings", str(path), "--user", "cy"]) == 2
    assert "'cy' has no ratings" in capsys.readouterr().err
