"""Training objectives, keyed by the `objective.name` users write in YAML.

An objective owns everything about a run that depends on what is learned: its config section, the
model head it needs, how a row of data becomes integer sequences and a batch of them tensors, the
unit the loop normalizes by, and the loss. It never owns the loop (training/loop.py), which calls
only what this page lists and never looks at an objective's name. The surface, per module:

    Config                      pydantic Section in the module's file; `name: Literal[...]` is the
                                registry key (`RunConfig.objective` is a union keyed by it)
    HEAD                        the model head it trains: a key of models.load.HEADS
    FORMATS                     the data formats (data.datasets[].format) it reads; None: every format
                                registered in data/formats.py except the preference ones (PAIRED)
    TEMPLATED                   rows are rendered with the chat template (else prompts go in raw)
    PACKABLE                    rows may be packed several to a row (data.packing)
    UNIT                        what `count` counts: "tokens" (then perplexity is reported), "pairs", "rows"
    METRICS                     {name: "sum" | "mean"} of the metrics `loss` returns, each a *sum* over
                                the batch's units: "sum" is logged as the step's total, "mean" divided by
                                the step's `count` (summed over micro-batches and ranks first)
    misfit(run_cfg) -> str|None the reason another section's setting cannot work with this objective
    encode(example, tokenizer, template, data_cfg) -> Encoded | str    a row, or a drop reason
    collate(rows, pad_id, packed) -> dict   a micro-batch (list of rows, each a list of Encoded;
                                several only when packed) -> tensors, plus `num_tokens` (int: real
                                tokens, for throughput)
    count(batch) -> int         units in a collated batch (read on the host copy)
    end_ids(tokenizer, template) -> list[int]   ids that end an answer (saved as generation EOS and
                                checked to carry loss); [] when the model does not generate
    render(encoded, tokenizer) -> str           one example for `tunewright validate`, trained part marked
    setup(model, cfg, data) -> state   optional (default None): e.g. a frozen reference
                                (objectives/reference.py); `data` is the run's PreparedData (tokenized
                                train and eval rows, the tokenizer and template), for values computed
                                once before training
    loss(model, batch, cfg, state) -> (summed loss, metrics)   summed over units, not averaged:
                                the loop divides by the `count` of the whole accumulated global batch

Optional, for objectives whose model or metrics depend on the data (the classification head):

    prepare_tokenizer(tokenizer) -> list[int]   tokens it adds before the data is read (a dedicated pad
                                token for head models); the embeddings grow by them
    fit_data(cfg, data) -> cfg  its Config with what the training rows decide (class names, `auto`
                                class weights), given the run's PreparedData; run once before the model loads
    model_config(cfg, tokenizer) -> dict    keys set on the transformers config before the weights load
                                (num_labels, id2label, label2id, problem_type, pad_token_id): saved in
                                config.json and recorded in final/tunewright.json, so a saved adapter loads
                                onto a base with the same head
    OUTPUTS                     names of per-row tensors [rows, ...] that `loss` also returns among its
                                metrics; at evaluation the loop collects them over every row (all ranks)
    eval_metrics(outputs, cfg) -> {name: float}   metrics that are not sums over units (ROC AUC, macro
                                F1) from the collected OUTPUTS, logged as eval_<name>

Optional, for objectives that learn from the model's own samples (ppo, grpo, rloo: objectives/rollout.py):

    steps_per_batch(cfg) -> int the loop gives each batch of the plan to this many consecutive optimizer
                                steps (PPO: ppo_epochs x minibatches per rollout); the epoch count and
                                num_epochs' total steps follow
    refresh(model, step, batches, cfg, state) -> batches   called by the loop at each step, before it
                                counts units, with the step's collated micro-batches (host copies) and
                                the unwrapped model; returns the micro-batches the step trains on (a
                                rollout sampled from the batches' prompts, or the next minibatch of it).
                                Random draws come from the run's torch RNG (seeded, saved in checkpoints)
    trainable(state) -> [Parameter]   parameters it trains beside the model's (a value head): they join
                                the optimizer as one more group at train.learning_rate
    save_state(state, path), load_state(state, path)   what `state` holds that a resume needs (the
                                rollout under way, the value head): written into each checkpoint's
                                `objective/` folder as safetensors and read back on resume

A new objective is one file here, one line in OBJECTIVES below and one test file. `auto` is a
config member, not an objective: it becomes causal_lm or seq2seq once the model is known.
"""

from __future__ import annotations

from tunewright.data.formats import FORMATS, PAIRED
from tunewright.errors import ConfigError
from tunewright.objectives import auto, causal_lm, classification, distill, dpo, grpo, kto, ppo, reward, rloo, seq2seq
from tunewright.registry import Configs, Registry

__all__ = ["OBJECTIVES", "OBJECTIVE_CONFIGS", "PLANNED_OBJECTIVES", "resolve_objective", "setup", "misfit",
           "check_fit", "prepare_tokenizer", "fit_data", "model_config", "steps_per_batch", "trainable", "save_state",
           "load_state"]

OBJECTIVES: Registry = Registry("objective")
OBJECTIVES.register("causal_lm", causal_lm)
OBJECTIVES.register("seq2seq", seq2seq)
OBJECTIVES.register("classification", classification)
OBJECTIVES.register("distill", distill)
OBJECTIVES.register("dpo", dpo)
OBJECTIVES.register("kto", kto)
OBJECTIVES.register("reward", reward)
OBJECTIVES.register("ppo", ppo)
OBJECTIVES.register("grpo", grpo)
OBJECTIVES.register("rloo", rloo)


# name -> Config of every member of the `objective` union: `auto` and the registered objectives (live)
OBJECTIVE_CONFIGS = Configs(OBJECTIVES, {"auto": auto.Config})

# Names users will reach for that a later release implements: rejected with a clear message.
PLANNED_OBJECTIVES = {name: "not supported yet" for name in (
    "contrastive",)}
# Losses of the dpo objective that users write as objective names (as other toolkits spell them)
PLANNED_OBJECTIVES.update({name: f"a loss of objective dpo: write name: dpo, loss: {name}"
                           for name in ("ipo", "orpo", "simpo")})


def resolve_objective(cfg, head: str):
    """(objective module, its Config) for `cfg` (RunConfig.objective); `auto` follows `head`, the
    head the model's architecture generates with (models.load.natural_head)."""
    if cfg.name == "auto":
        name, cfg = auto.resolve(cfg, head)
        return OBJECTIVES.get(name), cfg
    return OBJECTIVES.get(cfg.name), cfg


def setup(objective, model, cfg, data=None):
    """The objective's state for the run (a frozen reference, a teacher, ...), or None."""
    return objective.setup(model, cfg, data) if hasattr(objective, "setup") else None


def prepare_tokenizer(objective, tokenizer) -> list[int]:
    """Ids of the tokens `objective` adds to the tokenizer (none for most)."""
    return list(objective.prepare_tokenizer(tokenizer)) if hasattr(objective, "prepare_tokenizer") else []


def fit_data(objective, cfg, data):
    """`cfg` with what the training rows decide, for objectives that need it (else unchanged)."""
    return objective.fit_data(cfg, data) if hasattr(objective, "fit_data") else cfg


def model_config(objective, cfg, tokenizer) -> dict:
    """Settings of the model's config that `objective` needs before its weights load (else none)."""
    return dict(objective.model_config(cfg, tokenizer)) if hasattr(objective, "model_config") else {}


def steps_per_batch(objective, cfg) -> int:
    """Optimizer steps each batch of the plan is given to (1 but for rollout objectives)."""
    return objective.steps_per_batch(cfg) if hasattr(objective, "steps_per_batch") else 1


def trainable(objective, state) -> list:
    """Parameters `objective` trains beside the model's (none for most)."""
    return list(objective.trainable(state)) if hasattr(objective, "trainable") and state is not None else []


def save_state(objective, state, path) -> None:
    if hasattr(objective, "save_state") and state is not None:
        objective.save_state(state, path)


def load_state(objective, state, path) -> None:
    if hasattr(objective, "load_state") and state is not None:
        objective.load_state(state, path)


def misfit(objective, run_cfg) -> str | None:
    """Why `run_cfg`'s data settings cannot work with `objective` (formats, packing, its own rules)."""
    accepted = objective.FORMATS or tuple(f for f in FORMATS.names() if f not in PAIRED)
    name = objective.Config.model_fields["name"].default
    for section in ("datasets", "eval_datasets"):
        for i, src in enumerate(getattr(run_cfg.data, section)):
            if src.format not in accepted:
                return (f"data.{section}.{i}.format: {src.format!r} is not read by objective {name!r} "
                        f"(it reads {', '.join(accepted)})")
    if run_cfg.data.packing and not objective.PACKABLE:
        return f"data.packing: not possible with objective {name!r} (each example is its own row); turn packing off"
    return objective.misfit(run_cfg)


def check_fit(objective, run_cfg) -> None:
    reason = misfit(objective, run_cfg)
    if reason:
        raise ConfigError(reason)
