"""Probes (continual/probes.py): generative tasks never trained, scored on the language model under
the classifier. Their metrics equal the formulas computed by hand over the answer tokens only; the
model probed after a task is that task's body under the base's LM head (a body weight changed in
final/ changes P, the classification head does not); sequence.json keeps P beside R, one row per
task plus the zero-shot row, and a re-run keeps the rows it has; the config refuses bad probes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunewright.continual import probes
from tunewright.continual.config import load_continual_config
from tunewright.continual.report import probe_table, write_report
from tunewright.continual.sequence import run_sequence
from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.errors import ConfigError
from tunewright.models.load import ModelConfig, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _hand_scores(lm, rows: list[Encoded], vocab: int) -> tuple[float, float]:
    """(answer accuracy, answer loss) by the formulas, each row alone (no padding, no batch): logits
    [T, vocab] of the whole row, position t-1 predicting token t, for the t whose label is not -100."""
    right, nll, n = 0, 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = lm(input_ids=torch.tensor([row.input_ids])).logits[0, :, :vocab].double()  # [T, vocab]
            for t in range(1, len(row.input_ids)):
                if row.labels[t] == IGNORE_INDEX:
                    continue
                right += int(logits[t - 1].argmax()) == row.input_ids[t]
                nll -= float(torch.log_softmax(logits[t - 1], dim=-1)[row.input_ids[t]])
                n += 1
    return right / n, nll / n


def test_the_metrics_are_the_formulas_over_answer_tokens_only(tiny_model_dir):
    lm = load_model(ModelConfig(name=tiny_model_dir("llama")), "causal_lm").float().eval()
    vocab = lm.config.vocab_size
    # rows whose answers the model gets right at even answer positions and wrong at odd ones
    # (greedy token, then its runner-up), after a random prompt: accuracy is known exactly
    torch.manual_seed(0)
    rows, expected_right, answer_tokens = [], 0, 0
    for k in range(10):  # 10 rows: two forward passes of BATCH_ROWS, padded to different lengths
        n_prompt, n_answer = 3 + k % 4, 2 + k % 3
        ids = torch.randint(vocab, (n_prompt,)).tolist()
        for t in range(n_answer):
            with torch.no_grad():
                ranked = lm(input_ids=torch.tensor([ids])).logits[0, -1].argsort(descending=True).tolist()
            ids.append(ranked[t % 2])
        rows.append(Encoded(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:]))
        expected_right += (n_answer + 1) // 2
        answer_tokens += n_answer
    accuracy, loss = _hand_scores(lm, rows, vocab)
    assert accuracy == pytest.approx(expected_right / answer_tokens)
    with_prompt = Encoded(rows[0].input_ids, rows[0].input_ids)  # every token scored: a different number
    assert _hand_scores(lm, [with_prompt], vocab)[1] != pytest.approx(_hand_scores(lm, rows[:1], vocab)[1])

    scored = {metric: probes.score_probe(lm, probes.ProbeSet("p", metric, rows, vocab)) for metric in probes.METRICS}
    assert scored["answer_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert scored["answer_loss"] == pytest.approx(loss, rel=1e-5)
    assert probes.probe_row(lm, [probes.ProbeSet("p", "answer_loss", rows, vocab)]) == [scored["answer_loss"]]


def _cut(folder, rows: int, **changes) -> None:
    """sequence.json as a sequence stopped after `rows` tasks (R, P and seconds cut), with `changes`."""
    record = json.loads((folder / "sequence.json").read_text())
    cut = {**record, "R": record["R"][:rows], "P": record["P"][:rows], "seconds": record["seconds"][:rows]}
    (folder / "sequence.json").write_text(json.dumps({**cut, **changes}))


def _body_under_base_head(base_dir: str, final, vocab: int):
    """By hand: the base causal LM, its body's weights replaced by those in `final`/model.safetensors
    (the classifier's, its embedding one row longer for the pad token it added)."""
    saved = load_file(final / "model.safetensors")
    lm = load_model(ModelConfig(name=base_dir), "causal_lm")
    lm.resize_token_embeddings(saved["model.embed_tokens.weight"].shape[0])
    lm.model.load_state_dict({k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")})
    head = load_model(ModelConfig(name=base_dir), "causal_lm").lm_head.weight
    assert torch.equal(lm.lm_head.weight[:vocab], head)  # the base's head
    return lm.float().eval()


def test_a_sequence_keeps_p_beside_r_and_probes_the_tasks_body(sequence_raw, tiny_model_dir, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from sequences import probe_rows, probes_config

    base_dir = tiny_model_dir("llama")
    changes = probes_config(tmp_path)
    changes["data"]["cutoff_len"] = 56  # the last capitals row, longer, is truncated
    cfg = load_continual_config(raw=sequence_raw(model={"name": base_dir}, **changes))
    said = []
    result = run_sequence(cfg, "naive", say=said.append)
    folder = tmp_path / "runs" / "seq" / "naive"
    record = json.loads((folder / "sequence.json").read_text())

    # one row per task plus the zero-shot row, one score per probe; the results carry them
    assert record["probes"] == [{"name": "arithmetic", "metric": "answer_accuracy"},
                                {"name": "capitals", "metric": "answer_loss"}]
    assert len(record["P"]) == 2 and all(len(row) == 2 for row in [*record["P"], record["zero_shot_P"]])
    assert (result["P"], result["zero_shot_P"]) == (record["P"], record["zero_shot_P"])
    assert "probe capitals: tokenized 10 rows: 10 kept, 1 truncated to 56 tokens, 0 dropped (none)" in said

    # the rows are encoded as training encodes them: the prompt masked, the answer and EOS scored
    sets = probes.encode_probes(cfg, say=lambda *a: None)
    from tunewright.models.load import load_tokenizer
    tokenizer = load_tokenizer(cfg.model)
    answer = [i for i, label in zip(sets[0].rows[3].input_ids, sets[0].rows[3].labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer) == probe_rows("arithmetic")[3]["messages"][1]["content"] + "</s>"

    # zero-shot: the base LM; after a task: that task's body under the base's LM head
    base = load_model(ModelConfig(name=base_dir), "causal_lm").float().eval()
    assert record["zero_shot_P"] == probes.probe_row(base, sets)
    second = folder / "1-topics" / "final"

    def by_hand(final) -> list[float]:  # the formulas over the base vocabulary (the classifier's pad row left out)
        lm = _body_under_base_head(base_dir, final, sets[0].vocab)
        return [_hand_scores(lm, sets[0].rows, sets[0].vocab)[0], _hand_scores(lm, sets[1].rows, sets[1].vocab)[1]]

    assert record["P"][1] == pytest.approx(by_hand(second), rel=1e-6)
    assert record["P"][1] != pytest.approx(record["zero_shot_P"])

    # a body weight changed in the second task's final/: its row of P is scored again and changes; the
    # first row, kept in sequence.json, is not recomputed (a sentinel stays)
    weights = load_file(second / "model.safetensors")
    save_file({**weights, "model.layers.0.mlp.down_proj.weight": 3 * weights["model.layers.0.mlp.down_proj.weight"]},
              str(second / "model.safetensors"), metadata={"format": "pt"})
    _cut(folder, 1, P=[[0.5, 9.0]])
    again = run_sequence(cfg, "naive", say=lambda *a: None)
    assert again["P"][0] == [0.5, 9.0] and again["zero_shot_P"] == record["zero_shot_P"]
    assert again["P"][1] == pytest.approx(by_hand(second), rel=1e-6)
    assert again["P"][1][1] != pytest.approx(record["P"][1][1])

    # the classification head changed instead: R's row changes, P's does not (the head is not probed)
    save_file({**weights, "score.weight": -weights["score.weight"]}, str(second / "model.safetensors"),
              metadata={"format": "pt"})
    _cut(folder, 1)
    headless = run_sequence(cfg, "naive", say=lambda *a: None)
    assert headless["P"][1] == record["P"][1] and headless["R"][1] != record["R"][1]

    # probes added since R was recorded: P scored from each final/, R kept, nothing trained again
    stamp = (folder / "0-sentiment" / "final" / "model.safetensors").stat().st_mtime_ns
    record_now = json.loads((folder / "sequence.json").read_text())
    bare = {k: v for k, v in record_now.items() if k not in ("probes", "P", "zero_shot_P")}
    (folder / "sequence.json").write_text(json.dumps(bare))
    added = run_sequence(cfg, "naive", say=lambda *a: None)
    assert added["R"] == headless["R"] and added["P"] == [record["P"][0], headless["P"][1]]
    assert (folder / "0-sentiment" / "final" / "model.safetensors").stat().st_mtime_ns == stamp

    # report.md: each probe's zero-shot score, after the last task, and the change
    write_report(tmp_path / "report", cfg, {"naive": added})
    report = (tmp_path / "report" / "report.md").read_text()
    start, last = added["zero_shot_P"][1], added["P"][-1][1]
    assert f"| naive | capitals | answer_loss | {start:.3f} | {last:.3f} | {last - start:+.3f} |" in report
    assert json.loads((tmp_path / "report" / "results.json").read_text())["strategies"]["naive"]["P"] == added["P"]


def test_no_probes_no_probe_table():
    assert probe_table({"naive": {"R": [[1.0]], "zero_shot": [0.5]}}) == []


@pytest.mark.parametrize("change, message", [
    ({"metirc": "answer_loss"}, 'probes.0.metirc: unknown key \\(did you mean "metric"\\?\\)'),
    ({"name": "topics"}, "a probe's name must differ from the tasks'.*named like a task: topics"),
    ({"metric": "bleu"}, "probes.0.metric: Input should be 'answer_accuracy' or 'answer_loss'"),
    ({"eval_datasets": [{"path": "x.jsonl", "format": "classification"}]},
     "format 'classification' \\(x.jsonl\\): a probe scores an answer after a prompt"),
])
def test_bad_probes_are_refused(sequence_raw, change, message):
    probe = {"name": "qa", "eval_datasets": [{"path": "qa.jsonl", "format": "messages"}], **change}
    with pytest.raises(ConfigError, match=message):
        load_continual_config(raw=sequence_raw(probes=[probe]))


def test_repeated_probe_names_are_refused(sequence_raw):
    probe = {"name": "qa", "eval_datasets": [{"path": "qa.jsonl", "format": "messages"}]}
    with pytest.raises(ConfigError, match="probe names must differ; repeated: qa"):
        load_continual_config(raw=sequence_raw(probes=[probe, probe]))
    assert load_continual_config(raw=sequence_raw(probes=[probe])).probes[0].metric == "answer_accuracy"
