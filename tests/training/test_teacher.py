"""Teacher loading (packaged default and a tiny local BERT), pooling, and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acula.training.teacher import TeacherCache, TeacherSpec, load_teacher, pool_hidden

torch.set_num_threads(2)

WORDS = ["normal", "breath", "sounds", "wheeze", "crackle", "heart", "murmur", "systolic", "child", "adult"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT and a word-level tokenizer saved as a local HF directory."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(path)
    return path


def test_tiny_bert_mean_pooling_and_hidden_size(tiny_bert_dir) -> None:
    teacher = load_teacher(TeacherSpec(path=str(tiny_bert_dir), normalize=False))
    assert teacher.kind == "hf" and teacher.pooling == "mean" and teacher.hidden_size == 24
    out = teacher.encode(["normal breath sounds", "wheeze", "normal breath sounds"])
    assert out.shape == (3, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    # Padding must not change a text's embedding: encoded alone equals encoded next to a longer text.
    alone = teacher.encode(["wheeze"])
    np.testing.assert_allclose(alone[0], out[1], atol=1e-5)


def test_pool_hidden_last_token_right_and_left_padding() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool_hidden(hidden, right, "last")[:, 0].tolist() == [1.0, 7.0]
    assert pool_hidden(hidden, left, "last")[:, 0].tolist() == [3.0, 7.0]
    assert pool_hidden(hidden, right, "mean")[:, 0].tolist() == [0.5, 5.5]


def test_forced_last_pooling_changes_identity(tiny_bert_dir) -> None:
    mean = load_teacher(TeacherSpec(path=str(tiny_bert_dir)))
    last = load_teacher(TeacherSpec(path=str(tiny_bert_dir), pooling="last"))
    assert last.pooling == "last" and last.identity != mean.identity
    assert not np.allclose(mean.encode(["normal heart"]), last.encode(["normal heart"]))


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A randomly initialised 2-layer GPT-2 (decoder) with a word-level fast tokenizer, as a local folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(
        path
    )
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=2, n_head=2, n_positions=64)
    config.architectures = ["GPT2LMHeadModel"]
    GPT2Model(config).save_pretrained(path)
    return path


def test_decoder_teacher_uses_last_token_pooling(tiny_gpt2_dir) -> None:
    teacher = load_teacher(TeacherSpec(path=str(tiny_gpt2_dir), normalize=False))
    assert teacher.pooling == "last" and teacher.hidden_size == 16
    both = teacher.encode(["normal breath sounds", "wheeze"])
    # The padded (shorter) text pools its own last token: the same vector as encoded alone.
    np.testing.assert_allclose(teacher.encode(["wheeze"])[0], both[1], atol=1e-5)
    hidden = teacher.transformer(**teacher.tokenizer(["normal breath sounds"], return_tensors="pt"))
    np.testing.assert_allclose(both[0], hidden.last_hidden_state[0, -1].detach().numpy(), atol=1e-5)


def test_cache_runs_the_teacher_once_per_text(tiny_bert_dir, tmp_path) -> None:
    teacher = load_teacher(TeacherSpec(path=str(tiny_bert_dir)))
    cache = TeacherCache(teacher, tmp_path / "cache")
    first = cache.encode(["heart murmur", "child wheeze", "heart murmur"])
    assert teacher.calls == 1 and len(cache) == 2
    second = cache.encode(["child wheeze", "heart murmur"])
    assert teacher.calls == 1, "cached texts must not run the teacher again"
    np.testing.assert_array_equal(second, first[[1, 0]])
    cache.encode(["adult crackle", "heart murmur"])
    assert teacher.calls == 2
    # A new process (new cache object) reads the vectors from disk without running the model.
    reopened = TeacherCache(teacher, tmp_path / "cache")
    calls = teacher.calls
    np.testing.assert_array_equal(reopened.encode(["heart murmur"]), first[:1])
    assert teacher.calls == calls and len(reopened) == 3


def test_missing_directory_is_explained(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="hub names are not downloaded"):
        load_teacher(tmp_path / "nope")


@pytest.mark.slow
def test_packaged_default_teacher(tmp_path) -> None:
    teacher = load_teacher()
    assert teacher.kind == "sentence-transformers" and teacher.hidden_size == 384
    out = TeacherCache(teacher, tmp_path).encode(
        ["Vesicular breath sounds.", "Expiratory wheeze, left base."]
    )
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert float(out[0] @ out[1]) < 0.99
