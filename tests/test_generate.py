import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.generate import filtered_probs, generate, generate_text, sample_next
from llmbook.tokenizers import CharTokenizer

CFG = GPTConfig(vocab_size=40, n_positions=48, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # float64 so that cached and recomputed logits cannot differ by rounding
    return GPT(CFG).double().eval()


def test_kv_cache_gives_the_same_greedy_tokens(model):
    prompt = torch.randint(0, 40, (3, 7))
    with_cache = generate(model, prompt, 30, use_cache=True)
    without = generate(model, prompt, 30, use_cache=False)
    assert with_cache.shape == (3, 37)
    assert torch.equal(with_cache, without)


def test_kv_cache_same_sampled_tokens_with_same_seed(model):
    prompt = torch.randint(0, 40, (2, 5))
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, use_cache=False,
                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_batch_of_different_lengths_matches_one_at_a_time(model):
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    batched = generate(model, prompts, 12)
    alone = [generate(model, [p], 12)[0] for p in prompts]
    assert batched == alone
    assert all(out[: len(p)] == p for out, p in zip(batched, prompts))


def test_stop_token_ends_each_row(model):
    prompt = torch.randint(0, 40, (1, 5))
    free = generate(model, prompt, 20)[0, 5:].tolist()
    stop = free[3]
    out = generate(model, [prompt[0].tolist()], 20, stop_token=stop)[0][5:]
    assert out == free[: free.index(stop) + 1]


def test_context_overflow_is_a_clear_error(model):
    with pytest.raises(ValueError, match="context window of 48"):
        generate(model, torch.zeros(1, 40, dtype=torch.long), 9)
    out = generate(model, torch.zeros(1, 40, dtype=torch.long), 20, crop_context=True)
    assert out.shape == (1, 60)


def test_a_prompt_longer_than_the_window_works_with_the_suggested_crop_context(model):
    prompt = torch.randint(0, 40, (2, 60))  # the window is 48
    with pytest.raises(ValueError, match="crop_context=True") as err:
        generate(model, prompt, 5)
    assert "last 48 tokens" in str(err.value)
    out = generate(model, prompt, 5, crop_context=True)  # what the message suggests now works
    assert out.shape == (2, 65) and torch.equal(out[:, :60], prompt)
    # The model read only the last 48 tokens: the same continuation as from the cropped prompt.
    cropped = generate(model, prompt[:, -48:], 5, crop_context=True)
    assert torch.equal(out[:, 60:], cropped[:, 48:])
    assert torch.equal(out, generate(model, prompt, 5, crop_context=True, use_cache=False))
    rows = generate(model, [prompt[0].tolist(), prompt[1, :50].tolist()], 5, crop_context=True)
    assert rows[0] == out[0].tolist()
    assert rows[1] == generate(model, [prompt[1, :50].tolist()], 5, crop_context=True)[0]


def test_crop_context_matches_recomputing_the_window(model):
    prompt = torch.randint(0, 40, (1, 45))
    cached = generate(model, prompt, 10, crop_context=True)
    slow = generate(model, prompt, 10, crop_context=True, use_cache=False)
    assert torch.equal(cached, slow)


def test_greedy_is_argmax_and_top_k_restricts():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert sample_next(logits).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, temperature=5.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 3}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    p = filtered_probs(probs.log(), top_p=0.8)
    assert (p[0, 2:] == 0).all() and p[0, :2].sum().item() == pytest.approx(1.0)
    p = filtered_probs(probs.log(), top_p=0.81)
    assert (p[0, :3] > 0).all() and p[0, 3] == 0


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    cold, warm = filtered_probs(logits, 0.5), filtered_probs(logits, 2.0)
    assert cold[0, 2] > filtered_probs(logits, 1.0)[0, 2] > warm[0, 2]


def test_bad_sampling_arguments_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(torch.zeros(1, 3), temperature=1, top_p=1.5)


def test_generate_text_returns_only_the_continuation(model):
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ,.!?;:'-ABCDE")
    assert tok.vocab_size == 40
    text = generate_text(model, tok, "hello", 10)
    assert len(text) == 10
