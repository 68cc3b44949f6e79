"""Ratings to Yes/No prompts: the time-ordered split per user, the history a prompt shows (never the
candidate itself), the counts, bad rows, and `tunewright data ratings` on the lab's ratings export."""

from __future__ import annotations

import json

import pytest

from tunewright.cli import main
from tunewright.data.ratings import Rating, RatingsOptions, history_prompt, ratings_to_prompts, read_ratings, \
    split_by_time
from tunewright.errors import DataError


def _user(name: str, stars: list[float], items=None) -> list[Rating]:
    items = items or [f"item{i}" for i in range(len(stars))]
    return [Rating(name, item, s, float(t), t + 1) for t, (item, s) in enumerate(zip(items, stars))]


def test_each_users_last_ratings_are_held_out_in_time_order():
    ratings = _user("ada", [5, 1, 4, 2, 5, 3, 4, 1, 5, 2]) + _user("bo", [5, 1])
    ratings = ratings[::-1]  # file order does not matter, time does
    parts = split_by_time(ratings, RatingsOptions(test_fraction=0.2, val_fraction=0.1))
    assert [r.item for r in parts["ada"]["test"]] == ["item8", "item9"]
    assert [r.item for r in parts["ada"]["validation"]] == ["item7"]
    assert [r.item for r in parts["ada"]["train"]] == [f"item{i}" for i in range(7)]
    assert parts["bo"]["test"] == [] and len(parts["bo"]["train"]) == 2  # too few ratings to hold any out


def test_a_prompt_shows_the_most_recent_likes_and_dislikes_never_the_candidate():
    earlier = _user("ada", [5, 1, 4, 2, 5, 1], ["a", "b", "c", "d", "x", "e"])
    prompt = history_prompt(earlier, "x", RatingsOptions(history=2))
    assert prompt == ("The user liked a, c. The user disliked d, e. Will the user like x? Answer Yes or No.")
    # ada rated x twice: the later rating's prompt must not show the earlier one
    ratings = _user("ada", [5, 1, 4, 2, 5], ["x", "b", "c", "d", "x"])
    splits, counts = ratings_to_prompts(ratings, RatingsOptions(test_fraction=0.2, val_fraction=0))
    for rows in splits.values():
        for row in rows:
            shown = row["prompt"].split(" Will the user like ")[0]
            assert row["candidate"] not in shown.replace("The user liked ", "").replace("The user disliked ", "") \
                .replace(".", ",").split(", ")
    assert [r["candidate"] for r in splits["test"]] == ["x"] and splits["test"][0]["label"] == "Yes"
    assert counts["no_history"] == 1 and counts["train"] == 3  # the first rating has no past


def test_bad_rows_name_file_line_and_column(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("userId,title,stars\nada,x,5\nbo,y,lots\n")
    opts = RatingsOptions(columns={"user": "userId", "item": "title", "rating": "stars"})
    with pytest.raises(DataError, match=r"r.csv:3: stars: 'lots' is not a number"):
        read_ratings(path, opts)
    path.write_text("user,item\nada,x\n")
    with pytest.raises(DataError, match=r"r.csv:2: rating: missing"):
        read_ratings(path, RatingsOptions())


def test_data_ratings_command_on_the_lab_export(tmp_path, capsys):
    assert main(["lab", "export", "--task", "ratings", "--out", str(tmp_path / "lab"), "n_train=300", "n_val=10",
                 "n_test=10", "domain=books"]) == 0
    capsys.readouterr()
    assert main(["data", "ratings", str(tmp_path / "lab" / "train.jsonl"), "--out", str(tmp_path / "prompts"),
                 "--history", "3"]) == 0
    out = capsys.readouterr().out
    rows = {s: [json.loads(x) for x in (tmp_path / "prompts" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "validation", "test")}
    assert f"-> train {len(rows['train'])}, validation {len(rows['validation'])}, test {len(rows['test'])}" in out
    assert rows["test"] and all(r["label"] in ("Yes", "No") and "(a" in r["candidate"] for r in rows["test"])
    by_user = {}
    for split in ("train", "validation", "test"):
        for r in rows[split]:
            by_user.setdefault(r["user"], []).append((split, r["time"]))
    for times in by_user.values():  # every user's test targets come after their training targets
        train = [t for s, t in times if s == "train"]
        assert all(t > max(train) for s, t in times if s == "test")
    assert main(["data", "ratings", str(tmp_path / "lab" / "train.jsonl"), "--out", str(tmp_path / "prompts")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
