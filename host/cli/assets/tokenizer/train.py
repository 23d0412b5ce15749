"""Train the small BPE tokenizer.json that tests, `router sim-worker` and the
demo use (issues 16 and 18): byte-level BPE as GPT-2 and Llama 3 tokenizers
are built, 2000 tokens, trained on this repository's Markdown.

    python -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers==0.22.1
    /tmp/tok/bin/python host/cli/assets/tokenizer/train.py

writes host/cli/assets/tokenizer/tokenizer.json next to this script. The
file is committed: the router loads it with the Rust `tokenizers` crate, so
nothing here runs in CI.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]


def corpus() -> list[str]:
    files = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    return [str(f) for f in files if f.is_file()]


def main() -> None:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(corpus(), trainer)
    tokenizer.save(str(HERE / "tokenizer.json"))


if __name__ == "__main__":
    main()
