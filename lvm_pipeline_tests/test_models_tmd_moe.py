"""The TMD mixture-of-experts family: shapes, causality, top-2 routing, the balance loss, the TMD lane router,
overfitting, configs, a checkpoint round trip and a real training run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lvm_pipeline.datasets.sequences import WindowSpec, build_sequences
from lvm_pipeline.models.base import CONFIG_CLASSES, CONFIGS, FAMILIES, TMD_DIM, config_from_dict
from lvm_pipeline.models.recurrent import gru_small
from lvm_pipeline.models.tmd_moe import (
    N_EXPERTS,
    Routing,
    TMDMoEConfig,
    TMDMoEModel,
    balance_loss,
    decode_domains,
    tmd_moe_768,
    tmd_moe_small,
    toy_tmd_moe,
)
from lvm_pipeline.tmd.schema import UNKNOWN, bank_tmd_vectors, pack_tmd, tmd_vectors
from lvm_pipeline.training import load_checkpoint, train
from lvm_pipeline.training.checkpoint import save_checkpoint
from lvm_pipeline_tests.model_checks import assert_causal
from lvm_pipeline_tests.test_models_zoo import make_model
from lvm_pipeline_tests.test_models_zoo import test_768_configs_are_bigger_than_small_ones as assert_768_is_bigger
from lvm_pipeline_tests.test_models_zoo import test_every_config_field_is_commented as assert_fields_commented
from lvm_pipeline_tests.test_models_zoo import test_toy_model_overfits_a_tiny_dataset as assert_overfits_rotations
from lvm_pipeline_tests.test_training import planted_bank, quick

pytestmark = pytest.mark.usefixtures("one_thread")

D = 12  # concept-vector width in these tests: deliberately not any model's d_model


def lane_model(**overrides) -> TMDMoEModel:
    """toy_tmd_moe conditioned on the TMD vector, its router reading the lane."""
    return make_model("toy_tmd_moe", tmd=True, lane_router=True, **overrides)


def tmd_of_domains(domains: np.ndarray, seed: int = 0) -> torch.Tensor:
    """TMD vectors (shape of `domains` + [16]) of codes with these domains and random tasks and modifiers."""
    rng = np.random.default_rng(seed)
    flat = domains.reshape(-1)
    bits = [pack_tmd(int(d), int(t), int(m)) for d, t, m in zip(flat, rng.integers(0, 32, flat.size),
                                                              rng.integers(0, 64, flat.size))]
    return torch.from_numpy(tmd_vectors(np.array(bits))).reshape(*domains.shape, TMD_DIM)


def set_router(model: TMDMoEModel, weight_scale: float, bias: torch.Tensor) -> None:
    with torch.no_grad():
        model.gate.weight.mul_(weight_scale)
        model.gate.bias.copy_(bias)


def test_output_shape_is_the_input_width_and_finite():
    torch.manual_seed(0)
    for model, tmd in ((make_model("toy_tmd_moe"), None), (lane_model(), tmd_of_domains(np.arange(3 * 7).reshape(3, 7) % 16))):
        out = model(torch.randn(3, 7, D), tmd)
        assert out.shape == (3, 7, D)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("tmd_mode", "lane_router"), [("none", False), ("per_sequence", False), ("per_sequence", True),
                                                       ("per_position", False), ("per_position", True)])
def test_later_positions_never_change_earlier_outputs(tmd_mode, lane_router):
    torch.manual_seed(0)
    model = make_model("toy_tmd_moe", tmd=tmd_mode != "none", lane_router=lane_router).eval()
    assert_causal(model, D, tmd_mode, batch=3, seq=8, positions=(0, 2, 5, 6))


def test_each_position_routes_to_two_experts_with_weights_summing_to_one():
    torch.manual_seed(0)
    model = make_model("toy_tmd_moe").eval()
    with torch.no_grad():
        routing = model.routing(torch.randn(4, 9, D))
    assert routing.experts.shape == routing.weights.shape == (4, 9, 2)
    assert routing.probabilities.shape == (4, 9, N_EXPERTS)
    assert (routing.experts[..., 0] != routing.experts[..., 1]).all()
    assert ((routing.experts >= 0) & (routing.experts < N_EXPERTS)).all()
    assert (routing.weights > 0).all()
    torch.testing.assert_close(routing.weights.sum(-1), torch.ones(4, 9))
    assert (routing.experts[..., 0] == routing.probabilities.argmax(-1)).all()  # the likelier first
    chosen = routing.probabilities.gather(-1, routing.experts)
    torch.testing.assert_close(routing.weights, chosen / chosen.sum(-1, keepdim=True))
    assert len(routing.experts.unique()) > 2  # positions do not all go to the same pair


def test_the_mixture_is_the_weighted_sum_of_the_chosen_experts_only():
    torch.manual_seed(0)
    model = make_model("toy_tmd_moe").eval()
    x = torch.randn(3, 6, D)
    with torch.no_grad():
        shared = torch.randn(3, 6, model.config.d_model)
        routing = model.route(shared)
        every = torch.stack([expert(shared) for expert in model.experts], dim=-2)  # [3, 6, 16, d_model]
        chosen = every.gather(-2, routing.experts[..., None].expand(-1, -1, -1, model.config.d_model))
        torch.testing.assert_close(model.mixture(shared, routing), (routing.weights[..., None] * chosen).sum(-2))

        reference, experts = model(x), model.routing(x).experts
        b, t = 1, 4
        unchosen = next(i for i in range(N_EXPERTS) if i not in experts[b, t].tolist())
        for parameter in model.experts[unchosen].parameters():
            parameter.zero_()
        assert torch.equal(model(x)[b, t], reference[b, t])
        for parameter in model.experts[int(experts[b, t, 1])].parameters():  # the second choice does count
            parameter.zero_()
        assert not torch.allclose(model(x)[b, t], reference[b, t], atol=1e-4)


def test_balance_loss_by_hand():
    """Two positions to experts (0, 1) and (0, 2): f = (1/2, 1/4, 1/4), P = the mean of the two probability rows."""
    probabilities = torch.zeros(2, N_EXPERTS)
    probabilities[0, :2] = torch.tensor([0.6, 0.4])
    probabilities[1, [0, 2]] = torch.tensor([0.5, 0.5])
    routing = Routing(torch.tensor([[0, 1], [0, 2]]), torch.full((2, 2), 0.5), probabilities)
    expected = N_EXPERTS * (0.5 * 0.55 + 0.25 * 0.2 + 0.25 * 0.25)
    assert balance_loss(routing).item() == pytest.approx(expected)


def test_balance_loss_is_one_for_a_uniform_router_and_largest_for_a_collapsed_one():
    torch.manual_seed(0)
    model = make_model("toy_tmd_moe").eval()
    x = torch.randn(8, 10, D)
    with torch.no_grad():
        set_router(model, 0.0, torch.zeros(N_EXPERTS))  # every probability 1/16 (ties: the same two experts everywhere)
        assert balance_loss(model.routing(x)).item() == pytest.approx(1.0, abs=1e-6)
        collapsed = torch.zeros(N_EXPERTS)
        collapsed[5] = 30.0
        set_router(model, 0.0, collapsed)  # expert 5 takes all the probability, every position's first choice
        assert balance_loss(model.routing(x)).item() == pytest.approx(N_EXPERTS / 2, rel=1e-4)  # the largest value
        for seed in range(5):
            torch.manual_seed(seed)
            model.gate.reset_parameters()
            set_router(model, 3.0, model.gate.bias)  # random, moderately peaked routers lie in between
            assert 1.0 < balance_loss(model.routing(x)).item() < N_EXPERTS / 2


def test_auxiliary_loss_is_the_weighted_balance_loss_in_training_only():
    x = torch.randn(4, 7, D)
    losses = {}
    for weight in (0.01, 0.5):
        torch.manual_seed(0)
        model = make_model("toy_tmd_moe", balance_weight=weight).train()  # the toy has no dropout: training = eval
        model(x)
        losses[weight] = model.auxiliary_loss()
        with torch.no_grad():
            expected = weight * balance_loss(model.routing(x))
        torch.testing.assert_close(losses[weight].detach(), expected)
        losses[weight].backward()
        assert model.gate.weight.grad.abs().sum() > 0  # the balance loss trains the router
        model.eval()
        model(x)
        assert model.auxiliary_loss() is None
    torch.testing.assert_close(losses[0.5] / losses[0.01], torch.tensor(50.0))
    model = make_model("toy_tmd_moe", balance_weight=0.0).train()
    model(x)
    assert model.auxiliary_loss() is None


def test_lane_decoding_round_trips_every_domain():
    domains = np.repeat(np.arange(N_EXPERTS), 64)
    assert decode_domains(tmd_of_domains(domains)).tolist() == domains.tolist()
    extremes = [pack_tmd(d, t, m) for d in range(N_EXPERTS) for t in (0, 31) for m in (0, 63)]
    decoded = decode_domains(torch.from_numpy(tmd_vectors(np.array(extremes))))
    assert decoded.tolist() == [bits >> 12 for bits in extremes]
    unknown = bank_tmd_vectors(np.array([-1, pack_tmd(7, 3, 5)]))  # an unknown code is a zero vector
    assert decode_domains(torch.from_numpy(unknown)).tolist() == [UNKNOWN, 7]


def test_a_fresh_lane_router_sends_each_domain_to_its_expert():
    domains = np.arange(6 * 32).reshape(6, 32) % N_EXPERTS
    tmd, x = tmd_of_domains(domains), torch.randn(6, 32, D)
    expected = torch.from_numpy(domains)
    for lane_router, least_share in ((True, 1.0), (False, 0.0)):
        torch.manual_seed(0)
        model = make_model("toy_tmd_moe", tmd=True, lane_router=lane_router).eval()
        with torch.no_grad():
            experts = model.routing(x, tmd).experts
        share = (experts == expected[..., None]).any(-1).float().mean().item()
        if lane_router:
            assert share == least_share
        else:
            assert share < 0.5  # without the lane the router knows nothing of the domain
    with torch.no_grad():  # one TMD per sequence: every position of sequence b goes to its domain's expert
        per_sequence = lane_model().eval().routing(x, tmd[:, 0]).experts
    assert (per_sequence == expected[:, :1, None]).any(-1).all()
    with pytest.raises(ValueError, match="tmd"):
        make_model("toy_tmd_moe", lane_router=True)


def test_toy_model_overfits_a_tiny_dataset():
    assert_overfits_rotations("toy_tmd_moe", {})


def test_configs_are_commented_and_registered():
    assert_fields_commented(TMDMoEConfig)
    assert FAMILIES["tmd_moe"] is TMDMoEModel and CONFIG_CLASSES["tmd_moe"] is TMDMoEConfig
    assert TMDMoEConfig().family == "tmd_moe" and TMDMoEConfig().balance_weight == 0.01
    toy, small, predecessor = (CONFIGS[name]() for name in ("toy_tmd_moe", "tmd_moe_small", "tmd_moe_768"))
    assert (toy, small, predecessor) == (toy_tmd_moe(), tmd_moe_small(), tmd_moe_768())
    assert toy.d_model == 32 and toy.n_layers == 2 and toy.expert_hidden < toy.d_model
    backbone = gru_small()
    assert (small.d_model, small.n_layers, small.dropout, small.expert_hidden) == (
        backbone.d_model, backbone.n_layers, backbone.dropout, 256)
    assert (predecessor.d_model, predecessor.n_layers, predecessor.dropout) == (768, 6, 0.1)
    for config in (toy, small, predecessor):
        assert config_from_dict(config.to_dict()) == config
    assert_768_is_bigger("tmd_moe")


def test_checkpoint_round_trip_gives_equal_outputs(tmp_path):
    torch.manual_seed(0)
    model = lane_model(balance_weight=0.1).eval()
    with torch.no_grad():
        model.lane_scale.fill_(1.7)  # not its initial value: the round trip must carry it
    sidecar = {"model_name": "toy_tmd_moe", "model_config": model.config.to_dict(), "d_input": D}
    save_checkpoint(tmp_path, model, sidecar)
    loaded, read = load_checkpoint(tmp_path / "last")
    assert isinstance(loaded, TMDMoEModel) and not loaded.training
    assert loaded.config == model.config and read["model_name"] == "toy_tmd_moe"
    x, tmd = torch.randn(3, 8, D), tmd_of_domains(np.arange(24).reshape(3, 8) % N_EXPERTS)
    with torch.no_grad():
        assert torch.equal(loaded(x, tmd), model(x, tmd))
        assert torch.equal(loaded.routing(x, tmd).experts, model.routing(x, tmd).experts)
    assert loaded.lane_scale.item() == pytest.approx(1.7)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    bank = planted_bank(tmp_path_factory.mktemp("planted") / "bank")
    return build_sequences(bank, spec=WindowSpec(max_context=8))


def test_training_learns_the_planted_rule_and_adds_the_balance_loss(sequences, tmp_path):
    """The trainer's loss is the cosine loss (in [0, 2]) plus auxiliary_loss(): with balance_weight 10 the recorded
    loss is 10 x the balance loss (about 1 or more) give or take 2, and its fall by more than 2 is the balance's."""
    lane_run = train(replace(toy_tmd_moe(), tmd=True, lane_router=True), sequences, tmp_path / "lane", quick(),
                     progress=False)
    first, last = lane_run.history[0], lane_run.history[-1]
    assert last["train_loss"] < 0.7 * first["train_loss"]
    assert last["val_cosine"] > first["val_cosine"] + 0.2
    assert all(entry["train_loss"] < 2 for entry in lane_run.history)

    balanced = train(replace(toy_tmd_moe(), balance_weight=10.0), sequences, tmp_path / "balanced", quick(),
                     progress=False).history
    assert all(entry["train_loss"] > 5 for entry in balanced)  # the balance loss is in the trainer's loss
    assert balanced[-1]["train_loss"] < balanced[0]["train_loss"] - 4  # and its gradient balanced the router
