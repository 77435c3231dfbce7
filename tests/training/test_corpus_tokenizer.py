"""The demo tokenizer: the shipped file is what the build script produces, and it plugs into the
project's tokenizer loading (ids 0/1 = end-of-text/padding, as GPT-NeoX-20B)."""

from reprflow.prompts.tokenizers import TOKENIZER_DIR, load_tokenizer
from reprflow.training.corpus import load_documents, split_documents
from reprflow.training.corpus_tokenizer import DEMO_TOKENIZER, build_corpus_tokenizer, write_corpus_tokenizer


def test_build_reproduces_the_shipped_tokenizer(tmp_path):
    spec = {k: v for k, v in DEMO_TOKENIZER.items() if k != "name"}
    path = write_corpus_tokenizer(tmp_path, **spec)
    shipped = TOKENIZER_DIR / DEMO_TOKENIZER["name"] / "tokenizer.json"
    assert path.read_bytes() == shipped.read_bytes()


def test_demo_tokenizer_loads_and_round_trips():
    tok = load_tokenizer(DEMO_TOKENIZER["name"])
    assert len(tok) == DEMO_TOKENIZER["vocab_size"]
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    _, val = split_documents(load_documents("nq_open"), DEMO_TOKENIZER["val_fraction"])
    text = val[0]  # held-out text: byte-level BPE has no unknown token
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < len(tok) and 1 not in ids
    assert len(ids) < len(text.encode()) / 2  # merges learned: < 2 bytes per token
    assert build_corpus_tokenizer("nq_open", 300, 0.1).get_vocab_size() == 300
