"""A tiny local model folder (random Llama + word-level tokenizer) shared by the training CLI and bench tests."""

import pytest

from tests.conftest import tiny_llama, word_level_tokenizer


@pytest.fixture(scope="package")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama().save_pretrained(folder)
    word_level_tokenizer().save_pretrained(folder)
    return folder
