"""The systems under test, each run in its own process on one configuration (a `spec` dict).

    hf       B0: transformers.Trainer + PEFT LoRA, padding collator (DataCollatorForSeq2Seq),
             SDPA, fused AdamW; `gradient_checkpointing` as the spec says (B0 proper: on)
    hf_liger B1: the same plus `use_liger_kernel=True` (needs liger-kernel and a GPU)
    ours     tunewright.train() with the spec's config overrides (nothing else changed)

Every system: LoRA r=16, alpha=16, dropout 0 on the 7 linear projections of each block, constant
lr 2e-4, clip 1.0, the same rows in the same order (taken from tunewright's pipeline and plan), the
same weights (one folder per shape) and the same adapter init (seed set right before PEFT wraps).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks import measure
from benchmarks.workloads import data_config

LORA = {"name": "lora", "r": 16, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}
LR = 2e-4


def ours_config(spec: dict) -> dict:
    """The tunewright config of a spec; `spec["ours"]` holds dotted overrides (model.compile=true, ...)."""
    bf16 = spec["precision"] == "bf16"
    return {
        "model": {"name": spec["model"], "dtype": "bfloat16" if bf16 else "float32", "attn_implementation": "sdpa",
                  "gradient_checkpointing": spec.get("gradient_checkpointing", False)},
        "data": data_config(spec["workload"], Path(spec["data"]), spec["seq"], spec.get("packing", False)),
        "method": dict(LORA),
        "train": {"batch_size": spec["batch"], "micro_batch_size": spec["batch"],
                  "max_steps": spec["steps"], "learning_rate": LR, "lr_scheduler": "constant",
                  "mixed_precision": "bf16" if bf16 else "fp32", "seed": spec.get("seed", 0), "max_grad_norm": 1.0},
        "output": {"dir": str(Path(spec["workdir"]) / "runs"), "name": spec["id"].replace("/", "_"), "overwrite": True},
    }


def _config(spec: dict):
    from tunewright.config import load_config

    return load_config(raw=ours_config(spec), overrides=[f"{k}={v}" for k, v in spec.get("ours", {}).items()])


def plan_tokens(cfg) -> tuple[list, list[int], float]:
    """(the training rows in the order the plan feeds them, real tokens per optimizer step, the
    token-weighted mean example length). The same plan drives both systems' step contents."""
    from tunewright.data.pipeline import make_plan
    from tunewright.run import build

    built = build(cfg, with_model=False)
    packed = cfg.data.packing
    micro = make_plan(built.data.train, cfg.data, cfg.train.micro_batch_size, cfg.train.seed, packed)(0)
    per_step = cfg.train.batch_size // cfg.train.micro_batch_size
    tokens = [sum(len(e.input_ids) for mb in micro[i:i + per_step] for row in mb for e in row)
              for i in range(0, len(micro) - per_step + 1, per_step)]
    examples = [e for mb in micro for row in mb for e in row]
    lengths = [len(e.input_ids) for e in examples]
    return examples, tokens, sum(n * n for n in lengths) / sum(lengths)


def run_ours(spec: dict, cfg) -> list[dict]:
    import tunewright
    from tunewright.training.logging import read_metrics

    result = tunewright.train(cfg)
    steps = [m for m in read_metrics(result.run_dir) if "step_time" in m]
    return [{"step": m["step"], "time": m["step_time"], "loss": m["loss"], "grad_norm": m.get("grad_norm")}
            for m in steps]


def run_hf(spec: dict, cfg, examples: list) -> list[dict]:
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainerCallback,
                              TrainingArguments)

    from tunewright.models.aliases import resolve_model_name
    from tunewright.models.load import load_tokenizer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    tokenizer = load_tokenizer(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_name(cfg.model.name), dtype=dtype,
                                                 attn_implementation="sdpa")
    torch.manual_seed(spec.get("seed", 0))  # the same adapter init as ours (see ours_config's seed)
    lora = cfg.method  # the same LoRA settings ours trains with (LORA above, validated)
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                             target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]  # a plain list is a Dataset
    records: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            records.append({"step": state.global_step, "time": time.perf_counter() - self.t0})

    losses: list[float] = []

    class InOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):  # our plan's order, so step 1 sees the same rows
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, *args, **kwargs):
            out = super().compute_loss(model, inputs, *args, **kwargs)
            losses.append((out[0] if isinstance(out, tuple) else out).detach())
            return out

    micro = cfg.train.micro_batch_size
    args = TrainingArguments(
        output_dir=str(Path(spec["workdir"]) / "hf" / spec["id"].replace("/", "_")), max_steps=spec["steps"],
        per_device_train_batch_size=micro, gradient_accumulation_steps=cfg.train.batch_size // micro,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch_fused", bf16=dtype == torch.bfloat16, logging_steps=1, save_strategy="no",
        report_to=[], gradient_checkpointing=spec.get("gradient_checkpointing", False),
        gradient_checkpointing_kwargs={"use_reentrant": False}, use_cpu=not cuda, dataloader_num_workers=0,
        seed=spec.get("seed", 0), use_liger_kernel=spec["system"] == "hf_liger", disable_tqdm=True,
        torch_compile=spec.get("torch_compile", False))
    trainer = InOrder(model=model, args=args, train_dataset=rows, callbacks=[Clock()],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer.train()
    norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
    per_step = len(losses) // len(records)
    for i, r in enumerate(records):
        r["loss"] = float(sum(losses[i * per_step:(i + 1) * per_step]))
        r["grad_norm"] = float(norms[i]) if i < len(norms) else None
    return records


def run(spec: dict) -> dict:
    """One configuration, in this (fresh) process -> the result record."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if device == "cuda":
        if spec.get("memory_cap_gib"):
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, spec["memory_cap_gib"] * 2 ** 30 / total))
        torch.cuda.reset_peak_memory_stats()
    cfg = _config(spec)
    examples, step_tokens, mean_len = plan_tokens(cfg)
    if len(step_tokens) < spec["steps"]:
        raise ValueError(f"{spec['id']}: the workload has {len(step_tokens)} steps of data, {spec['steps']} asked")
    started = time.perf_counter()
    try:
        steps = run_ours(spec, cfg) if spec["system"] == "ours" else run_hf(spec, cfg, examples)
    except torch.OutOfMemoryError as err:
        return {**_head(spec, device), "status": "oom", "error": str(err).splitlines()[0]}
    except Exception as err:  # tunewright turns OOM into its own one-line error
        if "out of memory" not in str(err):
            raise
        return {**_head(spec, device), "status": "oom", "error": str(err).splitlines()[0]}
    wall = time.perf_counter() - started
    timed = steps[spec.get("warmup", 1):]
    rates = [step_tokens[s["step"] - 1] / s["time"] for s in timed]
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    # one peak per suite, measured by the driver before any run (per-process timings of a CPU GEMM
    # vary by more than the differences between rows)
    peak, peak_source = spec.get("peak_flops") or measure.peak_flops(device, dtype, spec.get("threads"))
    shape = _shape_numbers(cfg)
    fpt = measure.flops_per_token(shape["n_matmul"], shape["layers"], shape["d_model"], mean_len, shape["n_lora"])
    tps = statistics.median(rates)
    k = len(steps)
    return {**_head(spec, device), "status": "ok", "tokens_per_s": tps, "step_tokens_median": statistics.median(step_tokens[:len(steps)]),
            "step_time_median_s": statistics.median(s["time"] for s in timed), "mfu": tps * fpt / peak,
            "flops_per_token": fpt, "mean_example_len": mean_len, "peak_flops": peak, "peak_flops_source": peak_source,
            "loss_step1": steps[0]["loss"], "grad_norm_step1": steps[0]["grad_norm"], "k_step": k,
            "loss_step_k": steps[k - 1]["loss"], "losses": [s["loss"] for s in steps], "wall_s": wall,
            **measure.peak_memory(device), "env": measure.environment(device)}


def _head(spec: dict, device: str) -> dict:
    return {k: spec.get(k) for k in ("id", "suite", "group", "label", "system", "shape", "workload", "seq", "batch",
                                     "precision", "gradient_checkpointing", "packing", "ours")} | {"device_type": device}


def _shape_numbers(cfg) -> dict:
    """N_matmul, layers, d_model and N_lora of the configured model, counted on the meta device."""
    from tunewright.models.aliases import resolve_model_name
    from tunewright.models.inspect import meta_model
    from tunewright.models.methods import METHODS
    from tunewright.models.params import count_parameters

    model, _ = meta_model(resolve_model_name(cfg.model.name))
    n_matmul = measure.matmul_params(model)
    n_lora = count_parameters(METHODS.get("lora").apply(model, cfg.method))[0]
    return {"n_matmul": n_matmul, "layers": model.config.num_hidden_layers, "d_model": model.config.hidden_size,
            "n_lora": n_lora}
