"""`tunewright recommend RUN --ratings F --user U --k 10`: what a Yes/No recommender suggests to a user,
and how that ranking does on the user's held-out likes.

The user's ratings are split in time as `tunewright data ratings` splits them (data/ratings.py): the
test part is held out, everything before it is the history the prompts show. Every item of the file
the user has not rated in that history is a candidate; each gets the prompt the model was trained on
and is ranked by P(Yes | prompt) among {No, Yes} (label scoring, eval/scoring.py: one forward per
candidate, no generation).

    hit@k    1 when a held-out like (rating >= threshold) is among the top k, else 0
    NDCG@k   DCG / IDCG with DCG = sum over ranks i = 1..k of rel_i / log2(i + 1), rel_i = 1 for a
             held-out like; IDCG is the DCG of the best order (every like on top)
(Järvelin & Kekäläinen 2002; binary relevance, as in the LLM-recommender papers.)
"""

from __future__ import annotations

import math

from tunewright.data.ratings import RatingsOptions, history_prompt, read_ratings, split_by_time
from tunewright.errors import ConfigError

__all__ = ["hit_at_k", "ndcg_at_k", "recommend"]


def hit_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    return float(any(item in relevant for item in ranked[:k]))


def ndcg_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """Binary-relevance NDCG of the top k (nan when nothing is relevant: undefined)."""
    if not relevant:
        return math.nan
    dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def recommend(run, ratings_path, user: str, k: int = 10, opts: RatingsOptions | None = None,
              batch_size: int = 16) -> dict:
    """{"ranked": [(item, P(Yes))] best first, "held_out_likes", "candidates", "hit@k", "ndcg@k"} for `user`."""
    import torch

    from tunewright.eval.compare import load_candidate
    from tunewright.eval.config import Candidate
    from tunewright.eval.scoring import label_probabilities

    opts = opts or RatingsOptions()
    opts.check()
    if k < 1:
        raise ConfigError(f"recommend --k: must be at least 1 (got {k})")
    ratings = read_ratings(ratings_path, opts)
    parts = split_by_time(ratings, opts).get(user)
    if parts is None:
        raise ConfigError(f"recommend --user: {user!r} has no ratings in {ratings_path}")
    history = parts["train"] + parts["validation"]
    if not history:
        raise ConfigError(f"recommend --user: {user!r} has no ratings before the held-out part")
    seen = {r.item for r in history}
    candidates = sorted({r.item for r in ratings} - seen)
    likes = {r.item for r in parts["test"] if r.rating >= opts.threshold} - seen
    loaded = load_candidate(Candidate(name="recommender", run=str(run)))
    # each prompt a user turn in the run's template, as the classification rows it trained on were
    prompts = [history_prompt(history, item, opts) for item in candidates]
    with torch.no_grad():
        probs = label_probabilities(loaded.model, loaded.tokenizer, prompts, ["No", "Yes"], loaded.template,
                                    batch_size, raw=loaded.template is None, system_prompt=loaded.system_prompt)[:, 1]
    order = sorted(range(len(candidates)), key=lambda i: (-float(probs[i]), candidates[i]))
    ranked = [candidates[i] for i in order]
    return {"user": user, "ranked": [(candidates[i], float(probs[i])) for i in order], "held_out_likes": sorted(likes),
            "candidates": len(candidates), f"hit@{k}": hit_at_k(ranked, likes, k) if likes else math.nan,
            f"ndcg@{k}": ndcg_at_k(ranked, likes, k)}
