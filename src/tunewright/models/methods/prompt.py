"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning")
through peft: n learned embeddings ("virtual tokens") are put before every input; the model is frozen.

    [p_1 .. p_n] + embed(x_1 .. x_T)  ->  frozen model  ->  logits of the n + T positions

`prompt_tuning_init: text` starts the virtual tokens at the embeddings of a text's tokens (the
course: "Classify if the tweet is a complaint or no complaint."), so before training the model
reads as if that text were written before each input; without `num_virtual_tokens` their count
is the text's token count. The virtual tokens are vectors, not tokens: `tunewright inspect RUN
--nearest 5` shows the vocabulary tokens nearest each (by cosine).

Paths that see the extra positions: the causal-LM loss keeps the last T hidden states (the
input's own); packing is refused (the virtual tokens would come once per packed row, not once per
example); batched scoring and generation pad on the left, so positions are taken from the
attention mask (`_positions_from_mask`), as for a model without virtual tokens. Saves a
PEFT-format adapter (the n x d embeddings); cannot merge (no weight absorbs extra positions).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunewright.errors import ConfigError
from tunewright.sections import Section

__all__ = ["Config", "apply", "save", "load", "merge", "CANNOT_MERGE", "FORMAT", "load_for_inference", "misfit",
           "init_token_ids", "virtual_token_embeddings", "nearest_tokens", "RANDOM_TOKENS"]

FORMAT = "PROMPT_TUNING"
CANNOT_MERGE = "prompt tuning adds virtual tokens before the input; no weight of the base model can hold them"
MARKER = "prompt_embeddings"
RANDOM_TOKENS = 20  # virtual tokens of a random-init prompt when num_virtual_tokens is not given


class Config(Section):
    name: Literal["prompt"] = Field("prompt", description="Soft prompt tuning (learned virtual tokens) through peft.")
    num_virtual_tokens: int | None = Field(None, gt=0, description=(
        f"Virtual tokens before every input; default: the init text's token count (text init), {RANDOM_TOKENS} (random)."))
    prompt_tuning_init: Literal["random", "text"] = Field("random", description=(
        "Start the virtual tokens at random, or at the embeddings of prompt_tuning_init_text's tokens "
        "(repeated or cut to num_virtual_tokens)."))
    prompt_tuning_init_text: str | None = Field(None, description="The text for prompt_tuning_init: text.")

    @model_validator(mode="after")
    def _text_given(self):
        if self.prompt_tuning_init == "text" and not self.prompt_tuning_init_text:
            raise ValueError("prompt_tuning_init: text needs prompt_tuning_init_text")
        if self.prompt_tuning_init == "random" and self.prompt_tuning_init_text:
            raise ValueError("prompt_tuning_init_text is used only with prompt_tuning_init: text")
        return self


def misfit(run_cfg) -> str | None:
    if run_cfg.data.packing:
        return ("data.packing: not possible with method 'prompt': the virtual tokens would be added once per packed "
                "row, not once per example; turn packing off")
    return None


def _tokenizer_of(model):
    """The tokenizer saved with the model's folder: the one that tokenizes the init text."""
    from transformers import AutoTokenizer

    source = getattr(model, "name_or_path", None)
    try:
        return source, AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"method.prompt_tuning_init: text needs the model folder's tokenizer ({source!r}): "
                          f"{str(err).splitlines()[0]}") from None


def init_token_ids(model, cfg: Config) -> list[int]:
    """The token ids the virtual tokens start at with text init, as peft tokenizes the text (with
    the tokenizer's special tokens, e.g. Llama's BOS), repeated or cut to the virtual-token count."""
    _, tokenizer = _tokenizer_of(model)
    ids = tokenizer(cfg.prompt_tuning_init_text)["input_ids"]
    n = cfg.num_virtual_tokens or len(ids)
    return (ids * -(-n // len(ids)))[:n]


def apply(model, cfg: Config, *, new_token_ids=()):
    """Wrap `model` in a PeftModel whose only trainable parameters are the virtual tokens."""
    from peft import PromptTuningConfig

    from tunewright.models import peft_adapters
    from tunewright.models.load import peft_task_type

    peft_adapters.refuse_new_tokens(new_token_ids, "prompt")
    kwargs = {}
    count = cfg.num_virtual_tokens or RANDOM_TOKENS
    if cfg.prompt_tuning_init == "text":
        source, tokenizer = _tokenizer_of(model)
        count = cfg.num_virtual_tokens or len(tokenizer(cfg.prompt_tuning_init_text)["input_ids"])
        kwargs = dict(prompt_tuning_init="TEXT", prompt_tuning_init_text=cfg.prompt_tuning_init_text,
                      tokenizer_name_or_path=source)
    peft_cfg = PromptTuningConfig(task_type=peft_task_type(model), num_virtual_tokens=count, **kwargs)
    model = peft_adapters.wrap(model, peft_cfg, "prompt tuning")
    _positions_from_mask(model)
    return model


def _positions_from_mask(model) -> None:
    """peft drops `position_ids` for prompt tuning (peft_model.py `_adjust_prompt_learning_kwargs`),
    so the decoder numbers positions 0..n+T-1 whatever the padding. A left-padded row (batched
    scoring, generation) would then put its text further from the virtual tokens than the same row
    alone. This hook numbers real positions from the attention mask peft extended over the virtual
    tokens (cumsum - 1, what transformers' generate does for a plain model), keeping the last
    `seq` for a step that extends a cache; without padding it equals 0..n+T-1 (plain peft's)."""
    from tunewright.models.load import base_model

    decoder = base_model(model).get_decoder()
    if getattr(decoder, "_tunewright_positions_from_mask", False):  # a second prompt adapter on the same base
        return

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or mask is None or getattr(mask, "ndim", 0) != 2:
            return None
        given = kwargs.get("inputs_embeds") if kwargs.get("inputs_embeds") is not None else kwargs.get("input_ids")
        if given is None:
            return None
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -given.shape[1]:]
        return args, {**kwargs, "position_ids": positions}

    decoder.register_forward_pre_hook(hook, with_kwargs=True)
    decoder._tunewright_positions_from_mask = True


def virtual_token_embeddings(model):
    """The prompt's n x d embeddings (the active adapter's), as saved."""
    return model.get_prompt_embedding_to_save(model.active_adapter)


def nearest_tokens(model, k: int) -> list[list[tuple[int, float]]]:
    """Each virtual token's `k` nearest vocabulary tokens by cosine similarity with the input
    embeddings: per virtual token [(token id, cosine)], nearest first. A text-initialised prompt
    before training gives back its init tokens (cosine 1)."""
    import torch.nn.functional as F

    prompts = virtual_token_embeddings(model).float()  # [n, d]
    vocab = model.get_input_embeddings().weight.detach().float().cpu()  # [V, d]
    sims = F.normalize(prompts, dim=-1) @ F.normalize(vocab, dim=-1).T  # [n, V]
    values, ids = sims.topk(min(k, vocab.shape[0]), dim=-1)
    return [[(int(i), float(v)) for i, v in zip(row_ids, row_values)] for row_ids, row_values in zip(ids, values)]


def save(model, path) -> None:
    from tunewright.models import peft_adapters

    peft_adapters.save(model, path)


def load(model, path) -> None:
    from tunewright.models import peft_adapters

    peft_adapters.load(model, path, what="prompt tuning", marker=MARKER)


def merge(model):
    raise ConfigError(f"method 'prompt' cannot be merged: {CANNOT_MERGE}")


def load_for_inference(model, path, adapter_name: str = "default"):
    from tunewright.models import peft_adapters

    model = peft_adapters.load_adapter(model, path, peft_type=FORMAT, what="prompt tuning", marker=MARKER,
                                       trainable=False, field="adapter", adapter_name=adapter_name)
    _positions_from_mask(model)
    return model
