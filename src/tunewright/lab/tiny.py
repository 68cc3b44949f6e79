"""Tiny random-config models with a tokenizer trained on the spot (a fraction of a second).

Used by the tests, the smoke modes and, until the default model lands, `tunewright demo`.
The tokenizer is byte-level BPE, so any text encodes; special tokens follow the architecture's
conventions (Llama adds BOS, Qwen2 and GPT-2 do not, T5 appends EOS, BERT wraps a text in [CLS] ...
[SEP] and a pair in [CLS] a [SEP] b [SEP]) so the code paths that depend on them are exercised.
`bert` is an encoder (no language-model head: its folder holds the bare encoder with its pooler,
which a sequence-classification head loads onto).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["ARCHS", "train_tokenizer", "make_tiny_model", "DEFAULT_CORPUS"]

ARCHS = ("llama", "qwen2", "gpt2", "t5", "bert")

DEFAULT_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\nGive three tips for staying healthy.\n\n### Response:\nEat well, sleep enough and move every day.",
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.",
    "What is two plus three? Two plus three is five. Count from one to ten: one two three four five six seven eight nine ten.",
    "Summarize the following conversation. Alice asked Bob about the meeting and Bob said it moved to Friday.",
    "system user assistant: Hello! How can I help you today? Please answer briefly and politely.",
    "{\"name\": \"Ada\", \"city\": \"London\", \"age\": 36} extract the person into JSON with fixed keys.",
]


def train_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 2000, arch: str = "llama"):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `corpus` (no pad token: loaders add one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"llama": ["<unk>", "<s>", "</s>"], "qwen2": ["<|endoftext|>"],
                "gpt2": ["<|endoftext|>"], "t5": ["<pad>", "</s>", "<unk>"],
                "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}[arch]
    unk = next((t for t in ("<unk>", "[UNK]") if t in specials), None)
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus) * 4, trainer=trainer)
    if arch == "llama":  # Llama tokenizers prepend BOS
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if arch == "t5":  # T5 appends EOS
        eos = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    if arch == "bert":  # [CLS] a [SEP] (b [SEP]), segment ids 0 then 1
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                       unk_token="[UNK]", mask_token="[MASK]",
                                       model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _config(arch: str, vocab: int, tok, hidden: int, layers: int, seed: int):
    import transformers as tf

    common = dict(vocab_size=vocab)
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              tie_word_embeddings=False, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                              bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                              tie_word_embeddings=True, **common)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=1024,
                             bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, **common)
    if arch == "t5":
        return tf.T5Config(d_model=hidden, d_ff=hidden * 2, d_kv=hidden // 4, num_layers=layers,
                           num_heads=4, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id, **common)
    if arch == "bert":
        return tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                             intermediate_size=hidden * 2, max_position_embeddings=512,
                             pad_token_id=tok.pad_token_id, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHS)}")


def make_tiny_model(out_dir: str | Path, arch: str = "llama", corpus: Iterable[str] = DEFAULT_CORPUS,
                    vocab_size: int = 2000, hidden: int = 64, layers: int = 2, seed: int = 0,
                    initializer_range: float | None = None) -> Path:
    """Write a random-initialised model of `arch` and its tokenizer to `out_dir`; return the path.

    `initializer_range`: the std of the random weights (transformers' default 0.02 when None). At
    0.02 a 64-wide output head can move the logits by about 1 at most, so a method that leaves
    it frozen (adapters, prompts) cannot lower the loss much whatever it learns; a larger std
    gives such methods room to show that they learn."""
    import torch
    import transformers as tf

    out = Path(out_dir)
    tok = train_tokenizer(corpus, vocab_size, arch)
    cfg = _config(arch, len(tok), tok, hidden, layers, seed)
    if initializer_range is not None:
        cfg.initializer_range = initializer_range
    torch.manual_seed(seed)
    cls = {"t5": tf.AutoModelForSeq2SeqLM, "bert": tf.AutoModel}.get(arch, tf.AutoModelForCausalLM)
    model = cls.from_config(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
