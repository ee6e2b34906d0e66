"""The RWKV and RetNet families: the WKV against a naive reference, token shift, RetNet's parallel form against its
recurrent form, and for both: shapes, causality, TMD, overfitting, configs, sizes, a checkpoint round trip."""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F

from lvm_pipeline.models import retnet, rwkv
from lvm_pipeline.models.base import CONFIG_CLASSES, CONFIGS, FAMILIES, ModelConfig, NextConceptModel
from lvm_pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from lvm_pipeline_tests.model_checks import assert_causal

D = 12  # concept-vector width in these tests: deliberately not any model's d_model
FAMILY_NAMES = ("rwkv", "retnet")
# (registered toy config, form): both families in both of their forms
TOY_CASES = [("toy_rwkv", "recurrent"), ("toy_rwkv", "parallel"), ("toy_retnet", "parallel"), ("toy_retnet", "recurrent")]
TOY_IDS = [f"{name.removeprefix('toy_')}-{form}" for name, form in TOY_CASES]


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: faster on one thread than on two contended cores


def make_model(config_name: str, d_input: int = D, **overrides) -> NextConceptModel:
    """The registered config's model, built through the family registry (zoo.py is not required)."""
    config = replace(CONFIGS[config_name](), **overrides)
    return FAMILIES[config.family](config, d_input)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- RWKV: the WKV and the token shift ------------------------------------------------------------------------------

def naive_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The WKV by its definition, exp of every exponent taken as it is (overflows for large keys)."""
    outputs = []
    for t in range(k.shape[1]):
        steps_back = (t - 1 - torch.arange(t, dtype=k.dtype))[:, None]  # [i, 1] for the past i < t
        exponents = torch.cat((k[:, :t] + steps_back * w, (u + k[:, t])[:, None]), dim=1)  # [batch, t + 1, C]
        weights = torch.exp(exponents)
        outputs.append((weights * v[:, : t + 1]).sum(dim=1) / weights.sum(dim=1))
    return torch.stack(outputs, dim=1)


def random_wkv_inputs(batch: int, seq: int, channels: int, dtype: torch.dtype, key_scale: float = 1.0,
                      key_offset: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.randn(channels, generator=generator, dtype=dtype))
    u = torch.randn(channels, generator=generator, dtype=dtype)
    k = key_offset + key_scale * torch.randn(batch, seq, channels, generator=generator, dtype=dtype)
    v = torch.randn(batch, seq, channels, generator=generator, dtype=dtype)
    return w, u, k, v


@pytest.mark.parametrize("wkv", [rwkv.wkv_recurrent, rwkv.wkv_parallel], ids=["recurrent", "parallel"])
@pytest.mark.parametrize("seq", [1, 2, 9, 30])
def test_wkv_equals_the_naive_definition(wkv, seq):
    inputs = random_wkv_inputs(3, seq, 5, torch.float64, key_scale=2.0, seed=seq)
    torch.testing.assert_close(wkv(*inputs), naive_wkv(*inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("wkv", [rwkv.wkv_recurrent, rwkv.wkv_parallel], ids=["recurrent", "parallel"])
def test_wkv_stays_finite_and_right_where_the_naive_one_overflows(wkv):
    """Keys up to ~400 over 300 positions: exp overflows float32 (> 88), the stable forms do not."""
    w, u, k, v = random_wkv_inputs(2, 300, 4, torch.float32, key_scale=100.0, key_offset=100.0)
    assert not torch.isfinite(naive_wkv(w, u, k, v)).all()
    out = wkv(w, u, k, v)
    assert torch.isfinite(out).all()
    exact = naive_wkv(*(t.double() for t in (w, u, k, v)))  # float64 holds exp up to ~709
    assert torch.isfinite(exact).all()
    # float32 exponents near 400 are kept to ~3e-5 (their ulp), accumulated over the steps of the recurrence
    torch.testing.assert_close(out.double(), exact, atol=1e-3, rtol=0)


def test_wkv_gradients_are_finite_for_large_keys():
    w, u, k, v = (t.requires_grad_() for t in random_wkv_inputs(2, 50, 4, torch.float32, key_scale=100.0))
    rwkv.wkv_recurrent(w, u, k, v).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (w, u, k, v))


def test_token_shift_mixes_each_position_with_the_previous_one_and_position_0_with_zeros():
    torch.manual_seed(0)
    shift = rwkv.TokenShift(8, n_outputs=2)
    shift.current_share.data.uniform_(0.1, 0.9)
    x = torch.randn(2, 5, 8)
    for share, mixed in zip(shift.current_share, shift(x)):
        torch.testing.assert_close(mixed[:, 0], share * x[:, 0])  # no previous token: it counts as zeros
        torch.testing.assert_close(mixed[:, 1:], share * x[:, 1:] + (1 - share) * x[:, :-1])


def test_channel_mix_sees_exactly_the_current_and_the_previous_position():
    """The channel-mix has no recurrence: its token shift is its only way across positions."""
    torch.manual_seed(0)
    channel_mix = rwkv.ChannelMix(16, ffn_ratio=2.0).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        reference = channel_mix(x)
        previous_changed, older_changed = x.clone(), x.clone()
        previous_changed[:, 3] += 1
        older_changed[:, 2] += 1
        assert not torch.allclose(channel_mix(previous_changed)[:, 4], reference[:, 4], atol=1e-4)  # x_{t-1} -> t
        torch.testing.assert_close(channel_mix(older_changed)[:, 4:], reference[:, 4:])  # x_{t-2} never reaches t


@pytest.mark.parametrize("name", ["toy_rwkv", "toy_retnet"])
def test_the_form_is_checked(name):
    with pytest.raises(ValueError, match="form"):
        make_model(name, form="chunkwise")


# --- RetNet: retention ----------------------------------------------------------------------------------------------

def test_head_decays_follow_the_paper_schedule():
    torch.testing.assert_close(retnet.head_decays(4), torch.tensor([1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256]))


@pytest.mark.parametrize("retention", [retnet.retention_parallel, retnet.retention_recurrent],
                         ids=["parallel", "recurrent"])
def test_retention_decays_the_past_by_gamma_per_step_and_never_sees_the_future(retention):
    """One channel, q = k = 1: o_n = sum_{m <= n} gamma^(n-m) v_m."""
    gamma = torch.tensor([0.5, 0.9], dtype=torch.float64)
    ones = torch.ones(1, 2, 6, 1, dtype=torch.float64)
    first_only, last_only = torch.zeros_like(ones), torch.zeros_like(ones)
    first_only[:, :, 0], last_only[:, :, -1] = 1.0, 1.0
    powers = gamma[:, None] ** torch.arange(6, dtype=torch.float64)  # [heads, n]
    torch.testing.assert_close(retention(ones, ones, first_only, gamma)[0, :, :, 0], powers)
    torch.testing.assert_close(retention(ones, ones, last_only, gamma)[0, :, :, 0], last_only[0, :, :, 0])


@pytest.mark.parametrize("rotary", [True, False])
@pytest.mark.parametrize("seq", [1, 2, 9, 40])
def test_retention_layer_parallel_form_equals_the_recurrent_form(rotary, seq):
    torch.manual_seed(seq)
    layer = retnet.MultiScaleRetention(16, n_heads=4, rotary=rotary).double()
    x = torch.randn(2, seq, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, "parallel"), layer(x, "recurrent"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("seq", [1, 5, 23])
def test_retnet_model_gives_the_same_output_in_either_form_with_the_same_weights(seq):
    torch.manual_seed(0)
    parallel = make_model("toy_retnet", form="parallel", tmd=True).double().eval()
    recurrent = make_model("toy_retnet", form="recurrent", tmd=True).double().eval()
    recurrent.load_state_dict(parallel.state_dict())
    x, tmd = torch.randn(3, seq, D, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(parallel(x, tmd), recurrent(x, tmd), atol=1e-5, rtol=0)


@pytest.mark.parametrize("seq", [1, 5, 23])
def test_rwkv_model_gives_the_same_output_in_either_form_with_the_same_weights(seq):
    torch.manual_seed(0)
    recurrent = make_model("toy_rwkv", form="recurrent").double().eval()
    parallel = make_model("toy_rwkv", form="parallel").double().eval()
    parallel.load_state_dict(recurrent.state_dict())
    x = torch.randn(3, seq, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(parallel(x), recurrent(x), atol=1e-5, rtol=0)


# --- both families --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "form"), TOY_CASES, ids=TOY_IDS)
def test_output_shape_is_the_input_width(name, form):
    torch.manual_seed(0)
    model = make_model(name, form=form)
    assert model.config.d_model != D
    out = model(torch.randn(3, 7, D))
    assert out.shape == (3, 7, D)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "form"), TOY_CASES, ids=TOY_IDS)
@pytest.mark.parametrize("tmd_mode", ["none", "per_sequence", "per_position"])
def test_later_positions_never_change_earlier_outputs(name, form, tmd_mode):
    torch.manual_seed(0)
    model = make_model(name, form=form, tmd=tmd_mode != "none").eval()
    assert_causal(model, D, tmd_mode, batch=3, seq=8, positions=(0, 2, 5, 6))


def planted_rotation_sequences(n_sequences: int = 16, length: int = 6) -> torch.Tensor:
    """[n_sequences, length, D] unit vectors in which each next vector is one fixed random rotation of the last."""
    rotation, _ = torch.linalg.qr(torch.randn(D, D))
    starts = F.normalize(torch.randn(n_sequences, D), dim=-1)
    return torch.stack([starts @ torch.linalg.matrix_power(rotation.T, step) for step in range(length)], dim=1)


def next_vector_cosine_loss(model: NextConceptModel, sequences: torch.Tensor) -> torch.Tensor:
    predictions = model(sequences)[:, :-1]
    return (1 - F.cosine_similarity(predictions, sequences[:, 1:], dim=-1)).mean()


@pytest.mark.parametrize("name", ["toy_rwkv", "toy_retnet"])
def test_toy_model_learns_a_planted_rotation(name):
    torch.manual_seed(0)
    sequences = planted_rotation_sequences()
    model = make_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = next_vector_cosine_loss(model, sequences).item()
    for _ in range(150):
        optimizer.zero_grad()
        next_vector_cosine_loss(model, sequences).backward()
        optimizer.step()
    final = next_vector_cosine_loss(model, sequences).item()
    assert initial > 0.5
    assert final <= initial / 10, (initial, final)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_toy_small_and_768_configs_are_registered(family_name):
    assert FAMILIES[family_name] is {"rwkv": rwkv.RWKVModel, "retnet": retnet.RetNetModel}[family_name]
    assert CONFIG_CLASSES[family_name]().family == family_name
    toy, small, predecessor = (CONFIGS[name]() for name in (f"toy_{family_name}", f"{family_name}_small",
                                                            f"{family_name}_768"))
    assert all(type(config) is CONFIG_CLASSES[family_name] for config in (toy, small, predecessor))
    assert 16 <= toy.d_model <= 32 and toy.n_layers <= 2
    assert (small.d_model, small.n_layers, small.dropout) == (256, 2, 0.0)
    assert predecessor.d_model == 768 and predecessor.n_layers >= 6 and predecessor.dropout == 0.1


@pytest.mark.parametrize("config_class", [rwkv.RWKVConfig, retnet.RetNetConfig])
def test_every_config_field_is_commented(config_class):
    """Every field the config class declares has a comment on its line saying what it means."""
    source = textwrap.dedent(inspect.getsource(config_class))
    lines = source.splitlines()
    declared = [node for node in ast.parse(source).body[0].body if isinstance(node, ast.AnnAssign)]
    own_fields = {f.name for f in fields(config_class)} - {f.name for f in fields(ModelConfig)}
    assert {node.target.id for node in declared} == own_fields | {"family"}  # every field of its own is declared here
    uncommented = [node.target.id for node in declared if "#" not in lines[node.lineno - 1]]
    assert not uncommented, f"{config_class.__name__} fields without a comment: {uncommented}"


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_768_configs_are_bigger_than_small_ones(family_name):
    small = parameter_count(make_model(f"{family_name}_small", d_input=384))
    predecessor = parameter_count(make_model(f"{family_name}_768", d_input=384))
    assert predecessor > 2 * small


@pytest.mark.parametrize(("name", "form"), [("toy_rwkv", "parallel"), ("toy_retnet", "recurrent")])
def test_a_checkpoint_reloads_to_the_same_model(tmp_path, name, form):
    """A non-default form, so that the sidecar's config (not the registered default) is what is rebuilt."""
    torch.manual_seed(0)
    model = make_model(name, form=form, tmd=True).eval()
    sidecar = {"model_name": name, "model_config": model.config.to_dict(), "d_input": D}
    save_checkpoint(tmp_path, model, sidecar)
    loaded, loaded_sidecar = load_checkpoint(tmp_path / "last")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded_sidecar["model_name"] == name
    x, tmd = torch.randn(2, 7, D), torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, tmd), model(x, tmd), atol=0, rtol=0)
