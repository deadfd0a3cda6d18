"""Build the embedded tiny causal LM and its ChatML tokenizer, deterministically.

    python -m rlhf.assets.build_tiny [OUT_DIR] [--hidden 64 --layers 2 ...]

With no OUT_DIR it rewrites the shipped `rlhf/assets/models/tiny-chatml`. The result is a
normal Hugging Face checkpoint directory: `AutoTokenizer` / `AutoModelForCausalLM
.from_pretrained(OUT_DIR)` load it exactly as they load a hub model.

Determinism: the tokenizer is byte-level BPE (every byte has a token, so any text, Unicode
included, round-trips) trained to exhaustion on a fixed word list (the embedded tasks'
vocabulary and the chat roles), so each of those words is one token and everything else falls
back to bytes; the BPE trainer is deterministic for a fixed corpus. The weights are drawn from
NumPy's PCG64 with a fixed seed in state-dict order, which does not depend on the torch build.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf.assets import ASSETS

DEFAULT_OUT = ASSETS / "models" / "tiny-chatml"

# Special tokens of the two string families the platform renders (ChatML and Llama 3), so
# that a prompt in either family tokenizes into its markers instead of their bytes.
PAD = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
SPECIALS = [PAD, IM_START, IM_END, *LLAMA3_SPECIALS]

# ChatML as Qwen2.5 writes it, minus Qwen's injected default system prompt: the rendered
# prompt is exactly the one `../shared/spec/formats.md` gives for `chatml.*`.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def vocabulary_words() -> list[str]:
    """Words that become single tokens: the embedded tasks' words and the chat roles."""
    from rlhf.assets.build_data import task_words

    words = set(task_words()) | {"system", "user", "assistant"}
    return sorted(words)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokenizers import trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # Every word, bare and after a space: training merges until nothing is left to merge makes
    # each of them one token. The trainer is deterministic for a fixed corpus and alphabet.
    words = vocabulary_words()
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    backend.train_from_iterator([w for word in words for w in (word, " " + word)], trainer=trainer)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHATML_TEMPLATE,
        model_max_length=1024,
    )


def build_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int, seed: int,
                vocab_size: int | None = None, max_positions: int = 1024):
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        # Larger than the tokenizer's when asked (Qwen2.5's 151936 rows over 151665 tokens): the
        # output layer and its logits at a real model's size; ids past the tokenizer decode to "".
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    rng = np.random.Generator(np.random.PCG64(seed))
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if name.endswith("norm.weight"):
                values = np.ones(tuple(tensor.shape), dtype=np.float32)
            else:
                values = rng.normal(0.0, 0.02, size=tuple(tensor.shape)).astype(np.float32)
            tensor.copy_(torch.from_numpy(values))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build(out_dir: str | Path = DEFAULT_OUT, hidden: int = 128, layers: int = 2, heads: int = 4,
          intermediate: int = 256, seed: int = 0, vocab_size: int | None = None, max_positions: int = 1024) -> Path:
    """The tiny model and its tokenizer, saved to `out_dir`; the sizes give a bigger model of the
    same family (the benchmarks' models), `vocab_size` an output layer wider than the tokenizer,
    `max_positions` a longer context than the tiny model's 1024."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, hidden, layers, heads, intermediate, seed, vocab_size, max_positions)
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=None, help="output rows (default: the tokenizer's)")
    args = parser.parse_args(argv)
    out = build(args.out_dir, args.hidden, args.layers, args.heads, args.intermediate, args.seed, args.vocab_size)
    print(out)


if __name__ == "__main__":
    main()
