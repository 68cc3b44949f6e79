"""`tunewright.train` end to end on tiny random models: the config it accepts and saves, the run
folder rules, what final/ and checkpoints hold (loadable by plain transformers/peft), seq2seq,
epochs, evaluation with early stopping and retention, bf16, gradient checkpointing, packing,
init_from, and the errors a bad batch setup gives.

Runs are shared through module-scoped fixtures; every run is at most 8 steps of micro-batches of 2
(of 1 packed row in the packing test).
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

import tunewright
from tunewright import run
from tunewright.config import load_config, parse_config
from tunewright.data.templates import NAMED
from tunewright.errors import ConfigError, TunewrightError
from tunewright.models.load import is_checkpointing
from tunewright.training.checkpoint import complete_checkpoints
from tunewright.training.logging import read_metrics



def _probe(n_vocab: int) -> torch.Tensor:
    """[1, 11] token ids; with the ChatML markers (ids n_vocab, n_vocab + 1) when they were added."""
    return torch.tensor([[1, n_vocab, 40, 41, 42, n_vocab + 1, 50, n_vocab, 60, 61, n_vocab + 1]])


# ---------------------------------------------------------------- helpers

def _write(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _alpaca(n: int, distinct: int | None = None) -> list[dict]:
    distinct = distinct or n
    return [{"instruction": f"Repeat the number {i % distinct}.", "input": "",
             "output": f"number {i % distinct} " * (1 + i % 3)} for i in range(n)]


def _chat(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Say the number {i}."},
                          {"role": "assistant", "content": f"number {i} " * (1 + i % 3)}]} for i in range(n)]


def _cfg(root: Path, model: str, rows: str, fmt: str = "alpaca", **sections) -> dict:
    """A small run: micro-batches of 2, batch 4, output and tokenization cache under `root`.
    `sections` update the defaults key by key; `method` replaces it whole."""
    cfg = {"model": {"name": model},
           "data": {"datasets": [{"path": rows, "format": fmt}], "template": "alpaca", "cutoff_len": 64,
                    "cache_dir": str(root / "cache")},
           "method": {"name": "lora", "r": 4, "lora_dropout": 0.0},
           "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 2, "learning_rate": 1e-2, "seed": 3},
           "eval": {},
           "output": {"dir": str(root / "runs"), "name": "run"}}
    for key, value in sections.items():
        cfg[key] = value if key == "method" else {**cfg[key], **value}
    return cfg


@contextmanager
def _keeping_model():
    """Record the trained model (`seen["model"]`) as run.py hands it to the final save."""
    from tunewright.training import final

    seen: dict = {}
    original = final.save_final

    def spy(out, model, *rest, **kwargs):
        seen["model"] = model
        original(out, model, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(final, "save_final", spy)  # run.py imports it when the run saves
        yield seen


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits  # [1, T, vocab]


def _resized_base(model_dir: str, tokenizer):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base.resize_token_embeddings(len(tokenizer))  # the adapter carries the new rows
    return base


def _evals(metrics: list[dict]) -> list[dict]:
    return [m for m in metrics if "eval_loss" in m]


def _train_lines(metrics: list[dict]) -> list[dict]:
    return [m for m in metrics if "loss" in m]


@pytest.fixture(scope="module")
def llama(tiny_model_dir) -> str:
    return tiny_model_dir("llama")


# ---------------------------------------------------------------- shared runs

@pytest.fixture(scope="module")
def chat(llama, tmp_path_factory):
    """LoRA on messages with ChatML on a base Llama tokenizer (markers added as new tokens):
    4 steps, evaluation at 0, 2, 4, a checkpoint every 2 steps."""
    root = tmp_path_factory.mktemp("chat")
    cfg = _cfg(root, llama, _write(root / "chat.jsonl", _chat(20)), "messages",
               data={"template": "chatml", "val_set_size": 4}, train={"max_steps": 4},
               eval={"steps": 2, "at_start": True}, output={"name": "chat", "save_steps": 2})
    with _keeping_model() as seen:
        result = tunewright.train(cfg)
    base_vocab = len(AutoTokenizer.from_pretrained(llama))
    return SimpleNamespace(cfg=cfg, result=result, model=seen["model"], root=root, base_vocab=base_vocab,
                           probe=_probe(base_vocab))


@pytest.fixture(scope="module")
def recipe(llama, tmp_path_factory):
    """A YAML recipe without output.name, trained 2 steps with overrides from the command line."""
    root = tmp_path_factory.mktemp("recipe")
    raw = _cfg(root, llama, _write(root / "alpaca.jsonl", _alpaca(8)), train={"max_steps": 5})
    del raw["output"]["name"]
    path = root / "my_recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    overrides = ["train.max_steps=2", "train.learning_rate=0.002", "output.save_steps=1"]
    return SimpleNamespace(path=path, overrides=overrides, result=tunewright.train(str(path), overrides), root=root)


@pytest.fixture(scope="module")
def baseline(llama, tmp_path_factory):
    """fp32 LoRA, 2 steps, no dropout: the reference for bf16 and gradient checkpointing."""
    root = tmp_path_factory.mktemp("baseline")
    data = _write(root / "alpaca.jsonl", _alpaca(8))

    def make(name: str, **sections):
        cfg = _cfg(root, llama, data, output={"name": name})
        for key, value in sections.items():
            cfg[key] = {**cfg[key], **value}
        return cfg

    return SimpleNamespace(make=make, metrics=read_metrics(tunewright.train(make("fp32")).run_dir))


# ---------------------------------------------------------------- the config it takes and saves

# config.yaml records the precision `auto` resolved to, not `auto`: fp32 in the suite (tests/conftest.py)
AUTO_AS_RUN = ["train.mixed_precision=fp32"]


def test_yaml_path_with_overrides_names_the_run_after_the_recipe(recipe):
    result = recipe.result
    assert result.run_dir.name == "my_recipe" and result.steps == 2
    saved = load_config(result.run_dir / "config.yaml")
    assert saved == load_config(recipe.path, [*recipe.overrides, *AUTO_AS_RUN])
    assert saved.train.learning_rate == 0.002 and saved.output.name == "my_recipe"
    assert [m["lr"] for m in _train_lines(read_metrics(result.run_dir))][0] == 0.002


def test_dict_config_is_saved_resolved_and_reloads_equal(chat):
    text = (chat.result.run_dir / "config.yaml").read_text()
    assert "lora_alpha: 16" in text  # every default written out, not only the keys given
    assert load_config(chat.result.run_dir / "config.yaml") == load_config(raw=chat.cfg, overrides=AUTO_AS_RUN)


def test_run_config_object_with_overrides_and_no_name(llama, tmp_path):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(8)))
    del cfg["output"]["name"]
    result = tunewright.train(parse_config(cfg), ["train.max_steps=1"])
    assert result.steps == 1 and result.run_dir == tmp_path / "runs" / "run"
    saved = load_config(result.run_dir / "config.yaml")
    # the saved config names its run folder; reloading it must not rename the run after the file
    assert saved.output.name == "run" and saved.run_dir() == result.run_dir
    assert saved == load_config(raw=cfg, overrides=["train.max_steps=1", "output.name=run", *AUTO_AS_RUN])


def test_train_can_be_called_again_after_the_train_package_is_imported(recipe):
    import tunewright.training.loop  # noqa: F401  (once a package named `train` shadowed the function)

    with pytest.raises(ConfigError, match="is not empty"):
        tunewright.train(str(recipe.path), recipe.overrides)  # called, not "'module' is not callable"


# ---------------------------------------------------------------- the run folder

def _copy_run(recipe, tmp_path) -> tuple[Path, list[str]]:
    """The recipe's finished run copied under tmp_path, with overrides that point there."""
    dest = tmp_path / "runs" / "my_recipe"
    shutil.copytree(recipe.result.run_dir, dest)
    return dest, [*recipe.overrides, f"output.dir={tmp_path / 'runs'}"]


def test_non_empty_run_folder_is_refused(recipe, tmp_path):
    dest, overrides = _copy_run(recipe, tmp_path)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(ConfigError, match=r"is not empty.*train.resume=auto.*output.overwrite=true"):
        tunewright.train(str(recipe.path), overrides)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


def test_overwrite_replaces_the_runs_own_files(recipe, tmp_path):
    dest, overrides = _copy_run(recipe, tmp_path)
    result = tunewright.train(str(recipe.path), [*overrides, "output.overwrite=true", "train.max_steps=1"])
    assert result.run_dir == dest
    assert [m["step"] for m in read_metrics(dest)] == [1]
    assert [s for s, _ in complete_checkpoints(dest / "checkpoints")] == [1]


def test_overwrite_refuses_a_folder_holding_the_users_files(recipe, tmp_path):
    dest, overrides = _copy_run(recipe, tmp_path)
    (dest / "notes.txt").write_text("mine")
    (dest / "mydata.jsonl").write_text("{}\n")
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    with pytest.raises(ConfigError, match=r"output.overwrite: .* did not write \(mydata.jsonl, notes.txt\)"):
        tunewright.train(str(recipe.path), [*overrides, "output.overwrite=true", "train.max_steps=1"])
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


def test_resume_continues_in_the_non_empty_folder(recipe, tmp_path):
    dest, overrides = _copy_run(recipe, tmp_path)
    result = tunewright.train(str(recipe.path), [*overrides, "train.resume=auto", "train.max_steps=3"])
    assert result.steps == 3
    lines = read_metrics(dest)
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert lines[:2] == read_metrics(recipe.result.run_dir)  # the first two steps are the old run's


def test_resume_auto_without_a_checkpoint_starts_afresh(recipe, tmp_path):
    dest, overrides = _copy_run(recipe, tmp_path)
    shutil.rmtree(dest / "checkpoints")
    shutil.rmtree(dest / "final")
    result = tunewright.train(str(recipe.path), [*overrides, "train.resume=auto"])
    assert result.steps == 2
    # the attempt that saved nothing left metrics lines; they must not repeat steps 1 and 2
    assert [m["step"] for m in read_metrics(dest)] == [1, 2]


# ---------------------------------------------------------------- what final/ and checkpoints hold

def test_lora_final_is_a_peft_adapter_with_the_trained_logits(chat, llama):
    final = chat.result.final_dir
    assert (final / "adapter_config.json").is_file() and not (final / "config.json").exists()
    tok = AutoTokenizer.from_pretrained(final)
    loaded = PeftModel.from_pretrained(_resized_base(llama, tok), final)
    torch.testing.assert_close(_logits(loaded, chat.probe), _logits(chat.model, chat.probe), rtol=0, atol=1e-5)
    meta = json.loads((final / "tunewright.json").read_text())
    assert meta["method"] == "lora" and meta["base_model"] == llama


def test_chatml_markers_are_new_tokens_whose_rows_train_and_save(chat, llama):
    final = chat.result.final_dir
    tok = AutoTokenizer.from_pretrained(final)
    base_tok = AutoTokenizer.from_pretrained(llama)
    assert "<|im_end|>" not in base_tok.get_vocab()
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert (im_start, im_end) == (chat.base_vocab, chat.base_vocab + 1) and len(tok) == len(base_tok) + 2
    assert tok.tokenize("<|im_end|>") == ["<|im_end|>"]  # one special token, not pieces

    # the new rows start at the mean of the old rows (models/load.py) and must have moved
    base = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    saved = load_file(final / "adapter_model.safetensors")
    layers = {"model.embed_tokens": base.get_input_embeddings(), "lm_head": base.get_output_embeddings()}
    for module, layer in layers.items():
        rows = saved[f"base_model.model.{module}.token_adapter.trainable_tokens_delta"]  # [2, hidden]
        init = layer.weight.mean(0, keepdim=True).expand_as(rows)
        assert rows.shape == (2, base.config.hidden_size)
        assert (rows - init).abs().max() > 1e-3, f"{module}: the new token rows did not train"


def test_final_generation_config_stops_on_the_end_of_turn_token(chat, llama):
    final = chat.result.final_dir
    tok = AutoTokenizer.from_pretrained(final)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = GenerationConfig.from_pretrained(final)
    assert im_end in gen.eos_token_id and tok.eos_token_id in gen.eos_token_id

    # plain transformers + peft: reload, build the prompt with the saved template, generate
    model = PeftModel.from_pretrained(_resized_base(llama, tok), final).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Say the number 3."}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen,
                             max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]

    # once the model writes <|im_end|> (forced here: the model is random) generation stops there
    class ForceEndOfTurn:
        def __call__(self, input_ids, scores):
            scores = torch.full_like(scores, -1e9)
            scores[:, im_end] = 0
            return scores

    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen,
                             max_new_tokens=4, do_sample=False, logits_processor=[ForceEndOfTurn()])
    assert out[0, ids.shape[1]:].tolist() == [im_end]


def test_tokenizer_and_chat_template_in_final_and_every_checkpoint(chat):
    folders = [p for _, p in complete_checkpoints(chat.result.run_dir / "checkpoints")]
    assert [p.name for p in folders] == ["step-2", "step-4"]
    for folder in [*folders, chat.result.final_dir]:
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.chat_template == NAMED["chatml"], folder
        assert tok.convert_tokens_to_ids("<|im_end|>") == chat.base_vocab + 1, folder


def test_lora_checkpoint_is_a_peft_adapter(chat, llama):
    ckpts = chat.result.run_dir / "checkpoints"
    tok = AutoTokenizer.from_pretrained(ckpts / "step-4")
    last = PeftModel.from_pretrained(_resized_base(llama, tok), ckpts / "step-4")
    torch.testing.assert_close(_logits(last, chat.probe), _logits(chat.model, chat.probe), rtol=0, atol=1e-5)
    first = PeftModel.from_pretrained(_resized_base(llama, tok), ckpts / "step-2")
    assert (_logits(first, chat.probe) - _logits(last, chat.probe)).abs().max() > 1e-4  # an earlier point


# ---------------------------------------------------------------- evaluation, init_from

def test_eval_at_step_zero_and_every_n_steps(chat):
    metrics = read_metrics(chat.result.run_dir)
    evals = _evals(metrics)
    assert [m["step"] for m in evals] == [0, 2, 4]
    assert [m["step"] for m in _train_lines(metrics)] == [1, 2, 3, 4]
    for m in evals:
        assert m["eval_perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-9)
        assert m["eval_tokens"] > 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert chat.result.metrics["eval_loss"] == evals[-1]["eval_loss"]


def test_init_from_starts_a_new_run_from_the_adapter(chat, llama):
    cfg = json.loads(json.dumps(chat.cfg))
    cfg["method"] = {"name": "lora", "init_from": str(chat.result.final_dir)}
    cfg["train"]["max_steps"] = 2
    cfg["eval"] = {"steps": 2, "at_start": True}
    cfg["output"] = {**cfg["output"], "name": "from_adapter", "save_steps": None}
    result = tunewright.train(cfg)
    metrics = read_metrics(result.run_dir)
    finished = _evals(read_metrics(chat.result.run_dir))[-1]["eval_loss"]
    # same eval rows, the adapter's weights: the new run's step-0 loss is the old run's last
    assert _evals(metrics)[0]["step"] == 0
    assert _evals(metrics)[0]["eval_loss"] == pytest.approx(finished, abs=1e-6)
    # not a resume: steps count from 1 and the schedule starts again at the peak lr
    train_lines = _train_lines(metrics)
    assert [m["step"] for m in train_lines] == [1, 2] and result.steps == 2
    assert train_lines[0]["lr"] == cfg["train"]["learning_rate"]
    assert not (result.run_dir / "checkpoints" / "step-4").exists()


# ---------------------------------------------------------------- full fine-tuning, epochs

def test_full_final_is_a_plain_transformers_folder_and_epochs_count_steps(llama, tmp_path):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(12)), method={"name": "full"},
               train={"max_steps": None, "num_epochs": 2, "learning_rate": 1e-3})
    with _keeping_model() as seen:
        result = tunewright.train(cfg)
    # 12 rows / batch 4 = 3 steps per epoch, 2 epochs
    assert result.steps == 6
    assert [m["epoch"] for m in _train_lines(read_metrics(result.run_dir))] == \
        [round(s / 3, 4) for s in range(1, 7)]
    final = result.final_dir
    assert (final / "config.json").is_file() and not (final / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    ids = _probe(100)  # no tokens were added: ids inside the base vocabulary
    torch.testing.assert_close(_logits(loaded, ids), _logits(seen["model"], ids), rtol=0, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    assert (_logits(loaded, ids) - _logits(base, ids)).abs().max() > 1e-3
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template == NAMED["alpaca"]
    assert GenerationConfig.from_pretrained(final).eos_token_id == [tok.eos_token_id]


# ---------------------------------------------------------------- seq2seq

@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "lora", "r": 8, "lora_dropout": 0.0,
                                                      "target_modules": ["q", "v", "o", "wi", "wo"]}],
                         ids=["full", "lora"])
def test_t5_trains_with_the_seq2seq_objective(tiny_model_dir, tmp_path, method):
    t5 = tiny_model_dir("t5")
    lr = 3e-3 if method["name"] == "full" else 3e-2
    cfg = _cfg(tmp_path, t5, _write(tmp_path / "a.jsonl", _alpaca(8, distinct=2)), method=method,
               train={"max_steps": 6, "learning_rate": lr, "lr_scheduler": "constant"})
    cfg["data"].pop("template", None)  # encoder-decoder models read plain prompts
    result = tunewright.train(cfg)
    lines = _train_lines(read_metrics(result.run_dir))
    losses = [m["loss"] for m in lines]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses
    # max_steps wins over num_epochs (1): 8 rows / batch 4 = 2 steps per epoch, so 3 epochs
    assert [m["epoch"] for m in lines][1::2] == [1.0, 2.0, 3.0]
    tok = AutoTokenizer.from_pretrained(t5)
    final = result.final_dir
    if method["name"] == "full":
        AutoModelForSeq2SeqLM.from_pretrained(final)
    else:
        assert json.loads((final / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
        PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(t5), final)
    assert GenerationConfig.from_pretrained(final).eos_token_id == [tok.eos_token_id]


# ---------------------------------------------------------------- early stopping and retention

def test_early_stopping_keeps_the_best_and_the_newest_checkpoint(llama, tmp_path):
    # Watching eval_loss with mode "max" on a run whose eval loss falls: step 1 is the best, and
    # every later evaluation fails to improve, so patience 2 stops the run at step 3 of 8.
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(12)),
               data={"val_set_size": 4}, train={"max_steps": 8},
               eval={"steps": 1, "best_mode": "max", "early_stopping": {"mode": "max", "patience": 2}},
               output={"save_steps": 1, "save_total_limit": 1})
    result = tunewright.train(cfg)
    evals = _evals(read_metrics(result.run_dir))
    assert [m["step"] for m in evals] == [1, 2, 3]
    assert evals[0]["eval_loss"] > evals[1]["eval_loss"] > evals[2]["eval_loss"]  # the construction holds
    assert result.stopped_by == "early_stopping" and result.steps == 3 and result.best_step == 1
    ckpts = complete_checkpoints(result.run_dir / "checkpoints")
    assert [s for s, _ in ckpts] == [1, 3]  # limit 1, but the best and the newest are both kept
    state = json.loads((ckpts[-1][1] / "trainer_state.json").read_text())
    assert state["best_step"] == 1 and state["best_metric"] == pytest.approx(evals[0]["eval_loss"])
    assert result.final_dir is not None and (result.final_dir / "adapter_model.safetensors").is_file()


def test_early_stopping_min_delta_stops_when_no_change_is_large_enough(llama, tmp_path):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(12)),
               data={"val_set_size": 4}, train={"max_steps": 8},
               eval={"steps": 1, "early_stopping": {"patience": 1, "min_delta": 100.0}})
    result = tunewright.train(cfg)
    assert result.stopped_by == "early_stopping" and result.steps == 2
    assert [m["step"] for m in _evals(read_metrics(result.run_dir))] == [1, 2]


# ---------------------------------------------------------------- precision, checkpointing, packing

@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast is real on CUDA")
def test_fp16_on_the_cpu_is_refused_not_silently_fp32(baseline):
    with pytest.raises(ConfigError, match=r"train.mixed_precision: fp16 needs a CUDA GPU .* use bf16"):
        tunewright.train(baseline.make("fp16", train={"mixed_precision": "fp16"}))


def test_bf16_mixed_precision_trains_on_cpu(baseline):
    result = tunewright.train(baseline.make("bf16", train={"mixed_precision": "bf16"}))
    losses = [m["loss"] for m in _train_lines(read_metrics(result.run_dir))]
    reference = [m["loss"] for m in _train_lines(baseline.metrics)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # autocast really ran in bf16 (8-bit mantissa): close to the fp32 loss, not equal to it
    assert 0 < abs(losses[0] - reference[0]) < 0.05
    adapter = load_file(result.final_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: the weights moved


def test_gradient_checkpointing_gives_the_same_losses(baseline):
    with _keeping_model() as seen:
        result = tunewright.train(baseline.make("ckpt", model={"gradient_checkpointing": True}))
    assert is_checkpointing(seen["model"].get_base_model())
    got, want = _train_lines(read_metrics(result.run_dir)), _train_lines(baseline.metrics)
    # step 2's loss and step 1's gradient norm depend on the gradients checkpointing recomputed
    for key in ("loss", "grad_norm"):
        assert [m[key] for m in got] == pytest.approx([m[key] for m in want], abs=1e-5), key


def test_packing_gives_the_unpacked_first_step_loss(llama, tmp_path):
    data = _write(tmp_path / "a.jsonl", _alpaca(4))
    # one step over all 4 examples: 2 micro-batches of 2 rows, or 1 packed row holding all 4
    # (with packing the batch counts rows)
    plain = tunewright.train(_cfg(tmp_path, llama, data, data={"cutoff_len": 256}, train={"max_steps": 1},
                                  output={"name": "plain"}))
    packed = tunewright.train(_cfg(tmp_path, llama, data, data={"packing": True, "cutoff_len": 256},
                                   train={"max_steps": 1, "batch_size": 1, "micro_batch_size": 1},
                                   output={"name": "packed"}))
    a, b = _train_lines(read_metrics(plain.run_dir))[0], _train_lines(read_metrics(packed.run_dir))[0]
    assert a["target_tokens"] == b["target_tokens"] and a["tokens"] == b["tokens"]
    assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


# ---------------------------------------------------------------- errors

def test_batch_size_not_a_multiple_of_micro_batch_size(llama, tmp_path):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(8)), train={"batch_size": 5})
    with pytest.raises(TunewrightError, match=r"train.batch_size \(5\) must be a multiple of "
                                              r"train.micro_batch_size \(2\)"):
        tunewright.train(cfg)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_dataset_smaller_than_one_batch_then_the_fixed_run_starts_there(llama, tmp_path, capsys):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(3)))
    with pytest.raises(TunewrightError, match=r"train.batch_size: 4 is larger than the training set: "
                                              r"3 examples after filtering"):
        tunewright.train(cfg)
    # the failed start left nothing behind: the corrected run starts there
    assert not (tmp_path / "runs" / "run").exists()
    _write(tmp_path / "a.jsonl", _alpaca(5))
    capsys.readouterr()
    result = tunewright.train(cfg)
    assert result.steps == 2
    # 5 examples in batches of 4: the one left over in each epoch is said, not silent
    assert "each epoch: 1 steps; 1 of 5 examples do not fill a last batch" in capsys.readouterr().out


def test_packed_dataset_smaller_than_one_batch_counts_rows(llama, tmp_path):
    cfg = _cfg(tmp_path, llama, _write(tmp_path / "a.jsonl", _alpaca(4)), data={"packing": True, "cutoff_len": 256})
    with pytest.raises(TunewrightError, match=r"larger than the training set: 1 packed rows "
                                              r"after filtering \(4 examples packed into 1 rows\)"):
        tunewright.train(cfg)


# ---------------------------------------------------------------- resume safety (review findings)

def _resumable(tmp_path, tiny_model_dir, name="r", **train):
    rows = [{"instruction": f"Count to {i}.", "input": "", "output": " ".join(str(k) for k in range(i % 5 + 1))}
            for i in range(24)]
    data = tmp_path / "count.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": {"name": tiny_model_dir("llama")},
            "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "template": "alpaca", "cutoff_len": 48},
            "method": {"name": "lora", "r": 2},
            "train": {"batch_size": 4, "micro_batch_size": 2, "max_steps": 6, "learning_rate": 1e-2, **train},
            "output": {"dir": str(tmp_path / "runs"), "name": name, "save_steps": 2}}


def test_resume_refuses_a_changed_config_and_forgets_abandoned_checkpoints(tmp_path, tiny_model_dir):
    from tunewright.training.checkpoint import complete_checkpoints

    cfg = _resumable(tmp_path, tiny_model_dir)
    done = tunewright.train(cfg)
    step2 = done.run_dir / "checkpoints" / "step-2"
    changed = {**cfg, "method": {"name": "lora", "r": 2, "modules_to_save": ["lm_head"]},
               "train": {**cfg["train"], "resume": str(step2)}}
    with pytest.raises(ConfigError, match=r"train.resume: .*different settings: method.modules_to_save "
                                          r"\(\[\] -> \['lm_head'\]\)"):
        tunewright.train(changed)
    other_batch = {**cfg, "train": {**cfg["train"], "batch_size": 2, "resume": str(step2)}}
    with pytest.raises(ConfigError, match=r"different settings: train.batch_size \(4 -> 2\)"):
        tunewright.train(other_batch)
    # resuming from step 2 abandons steps 4 and 6 of the old run: they must not outlive it
    again = tunewright.train({**cfg, "train": {**cfg["train"], "resume": str(step2), "max_steps": 3}})
    assert again.steps == 3
    assert [s for s, _ in complete_checkpoints(done.run_dir / "checkpoints")] == [2, 3]


def test_final_is_replaced_atomically(tmp_path, tiny_model_dir):
    done = tunewright.train(_resumable(tmp_path, tiny_model_dir, name="f"))
    assert (done.final_dir / "adapter_model.safetensors").is_file()
    assert not list(done.run_dir.glob(".tmp-*"))
    record = json.loads((done.final_dir / "tunewright.json").read_text())
    assert record["raw_text"] is False and "revision" in record


def test_evaluation_without_data_is_an_error(tmp_path, tiny_model_dir):
    cfg = _resumable(tmp_path, tiny_model_dir, name="e")
    with pytest.raises(ConfigError, match="no evaluation data"):
        tunewright.train({**cfg, "eval": {"steps": 2}})
