"""The contrastive objective: InfoNCE against the hand formula and against sentence-transformers'
MultipleNegativesRankingLoss (scale 1/tau) on the same batch; micro-batches that are not one batch;
the cached option (GradCache) equal to the full batch in loss and gradients, dropout replayed;
two gloo processes whose gathered negatives make them one process with the whole batch; one LoRA
run whose exported folder SentenceTransformer(path) loads and embeds as we do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tunewright.config import DataConfig, DataSource, ModelConfig, load_config
from tunewright.data.formats import pairs as pairs_format
from tunewright.errors import ConfigError
from tunewright.models.load import load_model, load_tokenizer
from tunewright.models.sentence import sentence_files
from tunewright.objectives import contrastive as con

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [("Where was Ada Lovelace born?", "Ada Lovelace was born in London in 1815.", "Alan Turing was born in London."),
        ("What did Marie Curie discover?", "Marie Curie discovered polonium and radium.", "Pierre Curie studied crystals."),
        ("Which river flows through Cairo?", "The Nile flows through Cairo.", "The Amazon flows through Brazil."),
        ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.", "Raphael painted the School of Athens."),
        ("What is the capital of Peru?", "Lima is the capital of Peru.", "Quito is the capital of Ecuador."),
        ("When did the Berlin Wall fall?", "The Berlin Wall fell in 1989.", "The Soviet Union ended in 1991."),
        ("Which planet has rings?", "Saturn has bright rings of ice.", "Mars has two small moons."),
        ("Who wrote Hamlet?", "Shakespeare wrote Hamlet around 1600.", "Marlowe wrote Doctor Faustus.")]


@pytest.fixture(scope="module")
def st_folder(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny BERT as a sentence-transformers folder: mean pooling, then normalisation."""
    folder = tmp_path_factory.mktemp("st") / "tiny-bert-st"
    shutil.copytree(tiny_model_dir("bert"), folder)
    sentence_files(folder, 64, "mean", True, 128)
    return str(folder)


def _model(folder):
    torch.manual_seed(0)
    return load_model(ModelConfig(name=folder), con.HEAD), load_tokenizer(ModelConfig(name=folder))


def _batch(tokenizer, rows, negatives=True):
    src, data_cfg = DataSource(path="x.jsonl", format="pairs"), DataConfig(datasets=[DataSource(path="x.jsonl")])
    encoded = []
    for i, (anchor, positive, negative) in enumerate(rows):
        row = {"anchor": anchor, "positive": positive, **({"negative": negative} if negatives else {})}
        encoded.append([con.encode(pairs_format(row, i + 1, src), tokenizer, "", data_cfg)])
    return con.collate(encoded, tokenizer.pad_token_id, False)


def _alone(model, tokenizer, text) -> torch.Tensor:
    """A text's vector by hand: its tokens alone (no padding), mean over them, unit length."""
    hidden = model(input_ids=torch.tensor([tokenizer(text)["input_ids"]])).last_hidden_state[0]
    mean = hidden.mean(0)
    return mean / mean.norm()


def test_loss_is_the_hand_formula_and_multiple_negatives_ranking_loss(st_folder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model, tokenizer = _model(st_folder)
    model.eval()
    cfg = con.Config(temperature=0.07)
    rows = ROWS[:4]
    with torch.no_grad():
        ours, metrics = con.loss(model, _batch(tokenizer, rows), cfg)
        a, p, n = (torch.stack([_alone(model, tokenizer, r[k]) for r in rows]) for k in range(3))
        by_hand = 0.0
        for i in range(4):
            scores = [float(a[i] @ c) / 0.07 for c in [*p, *n]]
            by_hand -= scores[i] - torch.tensor(scores).exp().sum().log()
        st = SentenceTransformer(st_folder, device="cpu").eval()
        features = [st.tokenize([r[k] for r in rows]) for k in range(3)]
        mnrl = MultipleNegativesRankingLoss(st, scale=1 / 0.07)(features, None)
    assert float(ours) == pytest.approx(float(by_hand), abs=1e-6)
    assert float(ours) / 4 == pytest.approx(float(mnrl), abs=1e-6)  # ST averages over anchors, we sum
    assert 0 <= float(metrics["accuracy"]) <= 4 and metrics["anchors"].shape == (4, 64)


def test_symmetric_loss_averages_both_directions(st_folder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model, tokenizer = _model(st_folder)
    model.eval()
    with torch.no_grad():
        ours, _ = con.loss(model, _batch(tokenizer, ROWS[:4], negatives=False), con.Config(symmetric=True))
        a, p = (torch.stack([_alone(model, tokenizer, r[k]) for r in ROWS[:4]]) for k in range(2))
        targets = torch.arange(4)
        by_hand = (torch.nn.functional.cross_entropy(a @ p.T / 0.05, targets, reduction="sum")
                   + torch.nn.functional.cross_entropy(p @ a.T / 0.05, targets, reduction="sum")) / 2
        st = SentenceTransformer(st_folder, device="cpu").eval()
        features = [st.tokenize([r[k] for r in ROWS[:4]]) for k in range(2)]
        both = MultipleNegativesRankingLoss(st, scale=20.0, directions=("query_to_doc", "doc_to_query"),
                                            partition_mode="per_direction")(features, None)
    assert float(ours) == pytest.approx(float(by_hand), abs=1e-6)
    assert float(ours) / 4 == pytest.approx(float(both), abs=1e-6)


def test_four_micro_batches_of_two_are_not_one_batch_of_eight(st_folder):
    """The loop's accumulation is exact for per-token losses, not here: in micro-batches of 2 an anchor
    has 1 in-batch negative (plus 2 hard ones), in one batch of 8 it has 7 (plus 8)."""
    model, tokenizer = _model(st_folder)
    model.eval()
    cfg = con.Config()
    with torch.no_grad():
        whole = float(con.loss(model, _batch(tokenizer, ROWS), cfg)[0]) / 8
        parts = sum(float(con.loss(model, _batch(tokenizer, ROWS[i:i + 2]), cfg)[0]) for i in range(0, 8, 2)) / 8
    assert parts < whole - 0.05  # fewer candidates: an easier, smaller loss


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cached_embeddings_give_the_full_batch_loss_and_gradients(st_folder):
    model, tokenizer = _model(st_folder)
    model.eval()
    batch = _batch(tokenizer, ROWS)
    full, _ = con.loss(model, batch, con.Config())
    full.backward()
    want = _grads(model)
    model.zero_grad()
    cached, _ = con.loss(model, batch, con.Config(cache_chunk=5))  # 24 texts in chunks of 5
    cached.backward()
    got = _grads(model)
    assert float(cached.detach()) == pytest.approx(float(full.detach()), abs=1e-6)
    assert want.keys() == got.keys() and len(want) > 10
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)  # fp32 sums in another order


def test_cached_backward_replays_each_chunk_with_its_dropout(st_folder):
    """In train mode (dropout 0.1) the cached gradient is that of the chunks' forwards as they ran:
    the same seed, each chunk embedded with its graph kept, gives the same loss and gradients."""
    model, tokenizer = _model(st_folder)
    model.train()
    batch = _batch(tokenizer, ROWS[:4], negatives=False)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.manual_seed(3)
    cached, _ = con.loss(model, batch, con.Config(cache_chunk=3))
    cached.backward()
    got = _grads(model)
    model.zero_grad()
    torch.manual_seed(3)
    vectors = torch.cat([con.embed(model, ids[i:i + 3], mask[i:i + 3]) for i in range(0, 8, 3)])
    manual = con.info_nce(vectors[:4], vectors[4:], torch.arange(4), 0.05).sum()
    manual.backward()
    assert float(cached.detach()) == pytest.approx(float(manual.detach()), abs=1e-6)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_config_refuses_what_cannot_apply():
    base = {"data": {"datasets": [{"path": "x.jsonl", "format": "pairs"}]}, "objective": {"name": "contrastive"}}
    with pytest.raises(ConfigError, match="data.template: not used by objective 'contrastive'"):
        load_config(raw={**base, "data": {**base["data"], "template": "chatml"}})
    with pytest.raises(ConfigError, match="'alpaca' is not read by objective 'contrastive'"):
        load_config(raw={**base, "data": {"datasets": [{"path": "x.jsonl", "format": "alpaca"}]}})
    with pytest.raises(ConfigError, match="'pairs' is not read by objective 'causal_lm'"):
        load_config(raw={**base, "objective": {"name": "causal_lm"}})
    with pytest.raises(ConfigError, match="pooling"):
        load_config(raw={**base, "objective": {"name": "contrastive", "pooling": "max"}})


# ---------------------------------------------------------------- runs: two processes, LoRA and export

def _write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"anchor": a, "positive": p, "negative": n}) + "\n" for a, p, n in rows))
    return path


def _run_cfg(tmp_path, folder, name, micro, method=None):
    data = _write_rows(tmp_path / "pairs.jsonl", ROWS)
    return {"model": {"name": folder},
            "data": {"datasets": [{"path": str(data), "format": "pairs"}], "cutoff_len": 64},
            "objective": {"name": "contrastive", "temperature": 0.1},
            "method": method or {"name": "full"},
            "train": {"batch_size": 4, "micro_batch_size": micro, "max_steps": 2, "learning_rate": 1e-3,
                      "warmup_steps": 0},
            "output": {"dir": str(tmp_path / "runs"), "name": name}}


def test_two_processes_gather_negatives_into_one_batch(tmp_path, st_folder, fork_ranks):
    """Two gloo ranks with micro-batches of 2 train like one process with a micro-batch of 4: every
    anchor's candidates are both ranks' positives and negatives, and all_gather's backward returns
    each rank the gradient of its own rows."""
    import tunewright
    from tunewright.training.logging import read_metrics

    folder = tmp_path / "no-dropout"  # the processes draw other dropout masks than one process does
    shutil.copytree(st_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                    "attention_probs_dropout_prob": 0.0}))

    def main(rank: int, report) -> int:
        result = tunewright.train(_run_cfg(tmp_path, str(folder), "two", 2))
        report(json.dumps({"steps": result.steps}))
        return 0

    ranks = fork_ranks(main)
    assert [r.exit_code(timeout=120) for r in ranks] == [0, 0]
    one = tunewright.train(_run_cfg(tmp_path, str(folder), "one", 4))
    two, single = read_metrics(tmp_path / "runs" / "two"), read_metrics(one.run_dir)
    for key in ("loss", "grad_norm", "accuracy"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in single], rel=1e-5), key


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, st_folder):
    import tunewright

    root = tmp_path_factory.mktemp("contrastive")
    train = _write_rows(root / "train.jsonl", ROWS[:6])
    test = _write_rows(root / "test.jsonl", ROWS)
    result = tunewright.train({
        "model": {"name": st_folder},
        "data": {"datasets": [{"path": str(train), "format": "pairs"}],
                 "eval_datasets": [{"path": str(test), "format": "pairs"}], "cutoff_len": 64},
        "objective": {"name": "contrastive", "pooling": "mean"},
        "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"], "lora_dropout": 0.0},
        "train": {"batch_size": 3, "micro_batch_size": 3, "max_steps": 3, "learning_rate": 0.05},
        "eval": {"steps": 3},
        "output": {"dir": str(root / "runs"), "name": "con"}})
    return root, result


def st_base(result) -> str:
    return json.loads((result.final_dir / "tunewright.json").read_text())["base_model"]


def test_export_loads_in_sentence_transformers_with_our_vectors_and_metrics(lora_run):
    from sentence_transformers import SentenceTransformer

    from tunewright.eval.retrieval import rank_of_relevant, retrieval_metrics
    from tunewright.models.trained import load_trained
    from tunewright.models.sentence import export_sentence_transformer

    root, result = lora_run
    out = export_sentence_transformer(result.run_dir, root / "st")
    st = SentenceTransformer(str(out), device="cpu")
    queries, docs = [r[0] for r in ROWS], [r[1] for r in ROWS]
    theirs = torch.tensor(st.encode(queries + docs))
    model, tokenizer = load_trained(result.run_dir)
    inputs = tokenizer(queries + docs, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = con.embed(model, inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    # the last evaluation's retrieval metrics are those of the exported model on the test rows
    logged = [m for m in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if "eval_mrr" in m]
    expected = retrieval_metrics(rank_of_relevant(theirs[:8] @ theirs[8:].T, torch.arange(8)))
    assert logged and logged[-1]["step"] == 3
    assert {k: logged[-1][f"eval_{k}"] for k in expected} == pytest.approx(expected, abs=1e-6)
    # and the adapter was folded in: the base folder embeds otherwise
    assert not torch.allclose(torch.tensor(SentenceTransformer(st_base(result), device="cpu").encode(queries)),
                              theirs[:8], atol=1e-4)
