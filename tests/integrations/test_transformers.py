"""sigcell's sigmoid attention inside Hugging Face transformers models (CPU, random weights, offline)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AttentionInterface,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    BertLMHeadModel,
    DataCollatorWithFlattening,
)

from sigcell.integrations import transformers as st  # noqa: E402
from sigcell.ops import sigmoid_attn_func  # noqa: E402

VOCAB = 25_426  # Geneformer's gene-token vocabulary size
st.register()


def geneformer_small(**overrides) -> BertConfig:
    """Geneformer's small BertForMaskedLM shape (hidden 256, 4 heads, relu, 2048 positions), fewer layers."""
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=2,  # Geneformer-6L has 6; 2 keep the test fast
        num_attention_heads=4,
        intermediate_size=512,
        hidden_act="relu",
        max_position_embeddings=2048,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def padded_batch(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random gene tokens ``[B, L]`` and their attention mask."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), width), generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0
    return ids, mask


def mlm(seed: int, name: str = "sigmoid", **overrides) -> BertForMaskedLM:
    torch.manual_seed(seed)
    return AutoModelForMaskedLM.from_config(geneformer_small(**overrides), attn_implementation=name).eval()


class Capture:
    """Registers ``name``: a wrapper of a sigmoid registration recording each call's inputs and output."""

    def __init__(self, name: str, inner: str = "sigmoid"):
        self.calls: list[dict] = []
        self.inner = AttentionInterface._global_mapping[inner]
        AttentionInterface.register(name, self)
        transformers.AttentionMaskInterface.register(name, st.sigmoid_mask)

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        out, weights = self.inner(module, query, key, value, attention_mask, **kwargs)
        self.calls.append(dict(module=module, q=query.detach(), k=key.detach(), v=value.detach(),
                               mask=attention_mask, kwargs=kwargs, out=out.detach()))
        return out, weights


def test_import_sigcell_does_not_import_transformers():
    code = (
        "import sys, sigcell, sigcell.ops, sigcell.integrations\n"
        "bad = [m for m in sys.modules if m == 'transformers' or m.startswith('transformers.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_geneformer_mlm_forward_backward():
    model = mlm(seed=1).train()
    ids, mask = padded_batch([40, 23, 7], seed=1)
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 40, VOCAB)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    attn = model.bert.encoder.layer[0].attention.self
    for p in (attn.query.weight, attn.key.weight, attn.value.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_padding_does_not_change_valid_outputs():
    model = mlm(seed=2)
    lengths = [31, 12, 5]
    ids, mask = padded_batch(lengths, seed=2)
    with torch.no_grad():
        batched = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        # Garbage in the padded positions must not leak into valid ones.
        noisy = ids.masked_fill(mask == 0, 7)
        batched_noisy = model.bert(input_ids=noisy, attention_mask=mask).last_hidden_state
        for b, n in enumerate(lengths):
            alone = model.bert(input_ids=ids[b : b + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(batched[b, :n], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched_noisy[b, :n], batched[b, :n], atol=0, rtol=0)


@pytest.mark.parametrize(("bias", "learned_init"), [(None, None), (-2.5, None), ("learned", 0.3)])
def test_layer_outputs_equal_direct_op_call(bias, learned_init):
    name = f"sigmoid-direct-{bias}"
    st.register(name + "-inner", bias=bias)
    cap = Capture(name, inner=name + "-inner")
    model = mlm(seed=3, name="sdpa")
    if bias == "learned":
        st.add_learned_bias(model, init=learned_init)
        with torch.no_grad():  # distinct offsets per head, so a head mix-up would show
            for _, module, heads in st._attention_modules(model):
                module.sigmoid_bias.add_(torch.linspace(-0.5, 0.5, heads))
    model.set_attn_implementation(name)
    lengths = [26, 9]
    ids, mask = padded_batch(lengths, seed=3)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert len(cap.calls) == model.config.num_hidden_layers
    seq_lens = torch.tensor(lengths, dtype=torch.int32)
    for call in cap.calls:
        q, k, v = (call[t].transpose(1, 2) for t in "qkv")  # [B, L, H, D]
        if bias == "learned":
            # Oracle per sequence: -log(n) + the layer's per-head offsets, as a plain [H] bias.
            for b, n in enumerate(lengths):
                head_bias = call["module"].sigmoid_bias.detach() - math.log(n)
                ref = sigmoid_attn_func(q[b : b + 1, :n], k[b : b + 1, :n], v[b : b + 1, :n], bias=head_bias)
                torch.testing.assert_close(call["out"][b, :n], ref[0], atol=1e-6, rtol=1e-5)
                assert (call["out"][b, n:] == 0).all()
        else:
            ref = sigmoid_attn_func(q, k, v, bias=bias, seq_lens_q=seq_lens, seq_lens_k=seq_lens)
            torch.testing.assert_close(call["out"], ref, atol=0, rtol=0)


def test_learned_bias_zero_init_matches_default_and_trains():
    st.register("sigmoid-learned", bias="learned")
    default = mlm(seed=4)
    learned = mlm(seed=4, name="sdpa")
    names = st.add_learned_bias(learned)
    assert len(names) == learned.config.num_hidden_layers
    learned.set_attn_implementation("sigmoid-learned")
    ids, mask = padded_batch([18, 11], seed=4)
    labels = ids.masked_fill(mask == 0, -100)
    out_d = default(input_ids=ids, attention_mask=mask, labels=labels)
    out_l = learned(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out_l.logits, out_d.logits, atol=1e-5, rtol=1e-5)
    out_l.loss.backward()
    grad = learned.bert.encoder.layer[0].attention.self.sigmoid_bias.grad
    assert grad is not None and grad.shape == (4,) and grad.abs().sum() > 0
    assert any(n.endswith("sigmoid_bias") for n in learned.state_dict())


def test_from_config_and_set_attn_implementation_agree():
    cfg = geneformer_small()
    torch.manual_seed(5)
    base = AutoModel.from_config(cfg, attn_implementation="sigmoid").eval()
    assert base.config._attn_implementation == "sigmoid"
    torch.manual_seed(5)
    switched = AutoModel.from_config(cfg, attn_implementation="sdpa").eval()
    ids, mask = padded_batch([20, 13], seed=5)
    with torch.no_grad():
        softmax = switched(input_ids=ids, attention_mask=mask).last_hidden_state
        switched.set_attn_implementation("sigmoid")
        assert switched.config._attn_implementation == "sigmoid"
        sig_switched = switched(input_ids=ids, attention_mask=mask).last_hidden_state
        sig_base = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(sig_switched, sig_base, atol=0, rtol=0)
    assert (sig_switched - softmax).abs().max() > 1e-3  # the switch really changed the attention


def test_enable_switches_an_existing_model():
    torch.manual_seed(6)
    model = BertForMaskedLM(geneformer_small())
    assert st.enable(model) is model
    assert model.config._attn_implementation == "sigmoid"


def test_packed_batches_match_padded():
    model = mlm(seed=7)
    lengths = [14, 5, 9]
    ids, mask = padded_batch(lengths, seed=7)
    features = [{"input_ids": ids[b, :n].tolist()} for b, n in enumerate(lengths)]
    with torch.no_grad():
        padded = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = torch.cat([padded[b, :n] for b, n in enumerate(lengths)])
        for flash_kwargs in (True, False):  # explicit cu_seq_lens, or only restarting position_ids
            collate = DataCollatorWithFlattening(return_flash_attn_kwargs=flash_kwargs, return_tensors="pt")
            batch = collate(features)
            batch.pop("labels")
            assert ("cu_seq_lens_q" in batch) == flash_kwargs
            packed = model.bert(**batch).last_hidden_state
            assert packed.shape == (1, sum(lengths), 256)
            torch.testing.assert_close(packed[0], expected, atol=1e-5, rtol=1e-5)


def test_packed_backward():
    model = mlm(seed=8).train()
    ids, _ = padded_batch([12, 6], seed=8)
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_tensors="pt")(
        [{"input_ids": ids[0, :12].tolist()}, {"input_ids": ids[1, :6].tolist()}]
    )
    batch["labels"] = batch["input_ids"].clone()
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(model.bert.encoder.layer[1].attention.self.query.weight.grad).all()


def test_4d_key_padding_mask_is_accepted():
    model = mlm(seed=9)
    ids, mask = padded_batch([17, 8], seed=9)
    keep = mask.bool()[:, None, None, :].expand(-1, 1, 17, -1)
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    with torch.no_grad():
        ref = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        for m4 in (keep, additive):
            out = model.bert(input_ids=ids, attention_mask=m4).last_hidden_state
            torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_masks_that_are_not_right_padding_are_rejected():
    model = mlm(seed=10)
    ids, mask = padded_batch([12, 12], seed=10)
    left = mask.clone()
    left[1, :3] = 0
    with pytest.raises(ValueError, match="not a right-padding mask: sequence 1"):
        model(input_ids=ids, attention_mask=left)
    causal = torch.tril(torch.ones(12, 12, dtype=torch.bool))[None, None].expand(2, 1, -1, -1)
    with pytest.raises(st.UnsupportedModelError, match="not a key-padding mask"):
        model(input_ids=ids, attention_mask=causal)
    biased = torch.randn(2, 1, 12, 12)
    with pytest.raises(st.UnsupportedModelError, match="additive bias"):
        model(input_ids=ids, attention_mask=biased)


def test_decoder_is_rejected():
    cfg = geneformer_small(is_decoder=True)
    torch.manual_seed(11)
    decoder = BertLMHeadModel(cfg)
    with pytest.raises(st.UnsupportedModelError, match="decoder"):
        st.enable(decoder)
    decoder.set_attn_implementation("sigmoid")  # transformers itself accepts the name ...
    ids, mask = padded_batch([6, 4], seed=11)
    with pytest.raises(st.UnsupportedModelError, match="causal"):  # ... the first forward refuses it
        decoder(input_ids=ids, attention_mask=mask)


def test_encoder_decoder_is_rejected():
    cfg = AutoConfig.for_model("bart", vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1,
                               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                               decoder_ffn_dim=64, max_position_embeddings=32)
    model = AutoModel.from_config(cfg, attn_implementation="sigmoid")
    with pytest.raises(st.UnsupportedModelError, match="encoder-decoder"):
        st.check_model(model)
    ids = torch.randint(3, 64, (1, 8))
    with pytest.raises(st.UnsupportedModelError, match="causal"):
        model(input_ids=ids, decoder_input_ids=ids)


def test_model_computing_attention_itself_is_rejected():
    cfg = AutoConfig.for_model("megatron-bert", vocab_size=64, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)
    model = AutoModel.from_config(cfg, attn_implementation="sigmoid")
    with pytest.raises(st.UnsupportedModelError, match="computes attention itself instead of calling"):
        st.check_model(model)
    ids, mask = padded_batch([6, 4], seed=12)
    with pytest.raises(st.UnsupportedModelError, match="computes attention itself"):
        model(input_ids=ids.clamp(max=63), attention_mask=mask)


def test_unsupported_requests_give_clear_errors():
    model = mlm(seed=13, attention_probs_dropout_prob=0.1).train()
    ids, mask = padded_batch([8, 5], seed=13)
    with pytest.raises(ValueError, match=r"attention dropout p=0\.1"):
        model(input_ids=ids, attention_mask=mask)
    st.register("sigmoid-nodrop", attention_dropout="ignore")
    model.set_attn_implementation("sigmoid-nodrop")
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    model.eval()
    with pytest.raises(ValueError, match="output_attentions=False"):
        model(input_ids=ids, attention_mask=mask, output_attentions=True)
    st.register("sigmoid-learned-missing", bias="learned")
    model.set_attn_implementation("sigmoid-learned-missing")
    with pytest.raises(ValueError, match="add_learned_bias"):
        model(input_ids=ids, attention_mask=mask)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="sdpa"), "cannot be replaced"),
        (dict(name=""), "non-empty"),
        (dict(bias="log"), "'learned'"),
        (dict(bias=math.inf), "finite float"),
        (dict(scale=-1.0), "positive"),
        (dict(attention_dropout="drop"), "'error' or 'ignore'"),
    ],
)
def test_register_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        st.register(**kwargs)


@pytest.mark.parametrize("model_type", sorted(st.SUPPORTED_MODEL_TYPES - {"bert"}))
def test_other_supported_types_match_direct_op(model_type):
    cap = Capture(f"sigmoid-capture-{model_type}")
    cfg = AutoConfig.for_model(model_type, vocab_size=100, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, attention_probs_dropout_prob=0.0,
                               **({"embedding_size": 32} if model_type == "electra" else {}))
    torch.manual_seed(14)
    model = AutoModel.from_config(cfg, attn_implementation=f"sigmoid-capture-{model_type}").eval()
    st.check_model(model)
    ids, mask = padded_batch([11, 6], seed=14)
    with torch.no_grad():
        model(input_ids=ids.clamp(3, 99), attention_mask=mask)
    assert len(cap.calls) == 1
    call = cap.calls[0]
    q, k, v = (call[t].transpose(1, 2) for t in "qkv")
    lens = mask.sum(1).to(torch.int32)
    ref = sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
    torch.testing.assert_close(call["out"], ref, atol=0, rtol=0)


def test_mask_patterns_packed_accepted_others_rejected():
    from transformers.masking_utils import (
        and_masks,
        bidirectional_mask_function,
        packed_sequence_mask_function,
        remap_positions_for_packed_sequence,
        sliding_window_overlay,
    )

    seq = torch.tensor([[0, 0, 0, 1, 1]])
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    remapped = remap_positions_for_packed_sequence(bidirectional_mask_function, pos)
    packed = and_masks(remapped, packed_sequence_mask_function(seq))
    out = st.sigmoid_mask(1, 5, 5, mask_function=packed)
    assert out.seq_lens is None and out.kv_length == 5
    windowed = and_masks(packed, sliding_window_overlay(2))
    with pytest.raises(st.UnsupportedModelError, match="custom mask pattern"):
        st.sigmoid_mask(1, 5, 5, mask_function=windowed)
