"""Meta's LCM recipes: the robust scaler, Base-LCM, and the two-tower diffusion LCM (its DDIM schedule, guidance,
condition dropout, seeded sampling), each causal, overfitting a tiny set and reloading from its checkpoint."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.evaluation.queries import Queries
from lvm_pipeline.models.base import CONFIGS, FAMILIES, NextConceptModel
from lvm_pipeline.models.base_lcm import BaseLCMModel
from lvm_pipeline.models.diffusion_lcm import DDIMSchedule, DiffusionLCMModel, guided
from lvm_pipeline.models.onnx import export_onnx
from lvm_pipeline.models.predictor import ModelPredictor
from lvm_pipeline.models.scaling import RobustScaler
from lvm_pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from lvm_pipeline_tests.model_checks import assert_causal

D = 12


pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: faster on one thread than on two contended cores


def make_model(name: str, **overrides) -> NextConceptModel:
    config = replace(CONFIGS[name](), **overrides)
    return FAMILIES[config.family](config, D)


def as_if_trained(model: NextConceptModel) -> NextConceptModel:
    """The denoiser's AdaLN modulations start at zero (each layer the identity, blind to the context): give them
    weights, as training does, so that the context reaches the output."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if hasattr(module, "modulation"):
            with torch.no_grad():
                module.modulation[1].weight.copy_(torch.randn(module.modulation[1].weight.shape, generator=generator) * 0.3)
    return model


def fitted(model: NextConceptModel, seed: int = 0) -> NextConceptModel:
    """The model's scaler fitted on skewed, off-centre vectors (so that scaling is not close to the identity)."""
    rng = np.random.default_rng(seed)
    model.fit_train_vectors(rng.standard_exponential((500, D)) * rng.uniform(0.2, 3, D) + rng.normal(0, 2, D))
    return model


# --- the scaler ----------------------------------------------------------------------------------------------------

def test_the_robust_scaler_centres_on_the_median_scales_by_the_iqr_and_inverts():
    rng = np.random.default_rng(0)
    vectors = rng.normal(3.0, 2.0, size=(20_000, D))
    vectors[:50] = 1e6  # outliers move the mean and the standard deviation, not the median and the IQR
    scaler = RobustScaler(D)
    scaler.fit(vectors)
    np.testing.assert_allclose(scaler.centre.numpy(), 3.0, atol=0.1)
    np.testing.assert_allclose(scaler.scale.numpy(), 2.0, atol=0.1)
    x = torch.randn(4, 5, D) * 7
    torch.testing.assert_close(scaler.inverse(scaler(x)), x, atol=1e-4, rtol=1e-5)
    constant = RobustScaler(2)
    constant.fit(np.ones((10, 2)))
    assert torch.isfinite(constant(torch.zeros(1, 2))).all()


# --- shared family checks ----------------------------------------------------------------------------------------

LCM_CONFIGS = ["toy_base_lcm", "toy_diffusion_lcm"]


@pytest.mark.parametrize("name", LCM_CONFIGS)
@pytest.mark.parametrize("tmd_mode", ["none", "per_sequence", "per_position"])
def test_later_positions_never_change_earlier_outputs(name, tmd_mode):
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model(name, tmd=tmd_mode != "none"))).eval()
    assert_causal(model, D, tmd_mode, batch=3, seq=8, positions=(0, 2, 5, 6))


@pytest.mark.parametrize("name", LCM_CONFIGS)
def test_the_text_view_enters_and_stays_causal(name):
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model(name, text_view=True))).eval()
    x, view = torch.randn(2, 6, D), torch.randn(2, 6, D)
    with torch.no_grad():
        reference = model(x, view=view)
        changed = view.clone()
        changed[:, 4:] += 3
        out = model(x, view=changed)
    torch.testing.assert_close(out[:, :4], reference[:, :4], atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, 4:], reference[:, 4:], atol=1e-3)


@pytest.mark.parametrize("name", LCM_CONFIGS)
def test_checkpoint_round_trip_keeps_the_scaler_and_the_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model(name))).eval()
    save_checkpoint(tmp_path, model, {"model_name": name, "model_config": model.config.to_dict(), "d_input": D}, name="best")
    reloaded, _ = load_checkpoint(tmp_path / "best.safetensors")
    torch.testing.assert_close(reloaded.scaler.centre, model.scaler.centre)
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x), model(x))


def rotation_sequences(n: int = 16, length: int = 6, seed: int = 0) -> torch.Tensor:
    """[n, length, D] unit vectors, each the previous one turned by a fixed rotation."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(D, D, generator=generator))
    steps = [F.normalize(torch.randn(n, D, generator=generator), dim=-1)]
    for _ in range(length - 1):
        steps.append(steps[-1] @ rotation.T)
    return torch.stack(steps, dim=1)


def next_vector_error(model: NextConceptModel, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        error = (1 - F.cosine_similarity(model(x)[:, :-1], x[:, 1:], dim=-1)).mean().item()
    model.train()
    return error


@pytest.mark.parametrize("name", LCM_CONFIGS)
def test_toy_model_overfits_a_tiny_dataset_with_the_mse_in_the_scaled_space(name):
    """The training objective of each (Base-LCM's MSE, the denoiser's x0 MSE, both in the scaled space) learns the
    rotation, and the eval-mode prediction (the diffusion model's sample) finds the next vector."""
    torch.manual_seed(0)
    x = rotation_sequences()
    model = make_model(name, dropout=0.0)
    model.fit_train_vectors(x.reshape(-1, D).numpy())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = next_vector_error(model, x)
    for _ in range(300):
        optimizer.zero_grad()
        targets = {"target": x[:, 1:]} if model.trains_on_targets else {}
        predicted = model(x[:, :-1], **targets)
        loss = F.mse_loss(model.loss_space(predicted), model.loss_space(x[:, 1:]))
        loss.backward()
        optimizer.step()
    final = next_vector_error(model, x)
    assert initial > 0.5
    assert final <= initial / 10, (initial, final)


# --- Base-LCM ----------------------------------------------------------------------------------------------------

def test_base_lcm_is_the_transformer_between_the_scaler_and_its_inverse():
    torch.manual_seed(0)
    model = fitted(make_model("toy_base_lcm")).eval()
    assert isinstance(model, BaseLCMModel) and model.config.residual == "none"
    x = torch.randn(2, 5, D)
    scaled = model.scaler(x)
    with torch.no_grad():
        direct = model.output_proj(model.backbone(model.input_proj(scaled)))
        torch.testing.assert_close(model(x), model.scaler.inverse(direct))
    torch.testing.assert_close(model.loss_space(x), scaled)


# --- the diffusion LCM -------------------------------------------------------------------------------------------

def test_the_schedule_is_cosine_to_zero_terminal_snr():
    schedule = DDIMSchedule(100)
    alpha_bar = schedule.alpha_bar
    assert alpha_bar.shape == (100,)
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()  # noise grows with t
    assert alpha_bar[-1] == 0  # the last step is pure noise: zero terminal SNR
    assert 0.999 < alpha_bar[0] < 1
    steps = schedule.inference_steps(40)
    assert len(steps) == 40 and steps[0] == 99 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError, match="inference_steps"):
        schedule.inference_steps(101)


@pytest.mark.parametrize("t", [0, 1, 37, 99])
def test_a_ddim_step_with_the_true_x0_inverts_the_noising(t):
    """From x_t = noise(x0, eps, t), a step with the exact x0 lands on noise(x0, eps, previous); the last step (to -1)
    returns x0 itself, and at t = 0 a single step does."""
    schedule = DDIMSchedule(100)
    generator = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(3, 4, D, generator=generator), torch.randn(3, 4, D, generator=generator)
    x_t = schedule.add_noise(x0, noise, torch.full((3, 4), t))
    torch.testing.assert_close(schedule.step(x_t, x0, t, -1), x0, atol=1e-5, rtol=0)
    if t > 0:
        previous = t // 2
        torch.testing.assert_close(schedule.step(x_t, x0, t, previous),
                                   schedule.add_noise(x0, noise, torch.full((3, 4), previous)), atol=1e-5, rtol=0)


def test_guidance_at_one_is_the_conditional_prediction():
    generator = torch.Generator().manual_seed(0)
    conditional, unconditional = torch.randn(5, D, generator=generator), torch.randn(5, D, generator=generator)
    for rescale in (0.0, 0.7, 1.0):
        torch.testing.assert_close(guided(conditional, unconditional, 1.0, rescale), conditional)
    torch.testing.assert_close(guided(conditional, unconditional, 0.0, 0.0), unconditional)
    pushed = guided(conditional, unconditional, 3.0, 1.0)
    torch.testing.assert_close(pushed.std(dim=-1), conditional.std(dim=-1))  # full rescale: the conditional's spread


def test_sampling_with_guidance_one_equals_the_conditional_chain_and_guidance_changes_it():
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model("toy_diffusion_lcm", guidance=1.0))).eval()
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        context = model.backbone(model.embed_inputs(model.scaler(x)))
        slots = torch.cat((torch.zeros(2, 1, context.shape[-1]), context), dim=1)
        positions = torch.arange(5).expand(2, 5)
        generator = torch.Generator().manual_seed(model.config.sample_seed)
        sample = torch.randn(2, 5, D, generator=generator) * model.config.initial_noise_scale
        steps = model.schedule.inference_steps(model.config.inference_steps)
        keys_values, conditional = model.slot_keys_values(slots), torch.zeros(2, dtype=torch.bool)
        for i, t in enumerate(steps):
            estimate = model.denoise(sample, torch.full((2, 5), t), keys_values, positions, conditional)
            sample = model.schedule.step(sample, estimate, t, steps[i + 1] if i + 1 < len(steps) else -1)
        torch.testing.assert_close(model(x), model.scaler.inverse(sample), atol=1e-5, rtol=0)
        model.config.guidance = 3.0
        assert not torch.allclose(model(x), model.scaler.inverse(sample), atol=1e-3)


def test_an_unconditional_row_sees_only_the_zero_vector():
    """Condition dropout's rows (and guidance's free pass) cannot read the context."""
    torch.manual_seed(0)
    model = as_if_trained(make_model("toy_diffusion_lcm")).eval()
    noisy, t = torch.randn(2, 4, D), torch.full((2, 4), 50)
    positions = torch.arange(4).expand(2, 4)
    d = model.config.d_model
    slots = torch.cat((torch.zeros(2, 1, d), torch.randn(2, 4, d)), dim=1)
    other = torch.cat((torch.zeros(2, 1, d), torch.randn(2, 4, d)), dim=1)
    with torch.no_grad():
        free = [model.denoise(noisy, t, model.slot_keys_values(s), positions, torch.ones(2, dtype=torch.bool))
                for s in (slots, other)]
        bound = [model.denoise(noisy, t, model.slot_keys_values(s), positions, torch.zeros(2, dtype=torch.bool))
                 for s in (slots, other)]
    torch.testing.assert_close(free[0], free[1])
    assert not torch.allclose(bound[0], bound[1], atol=1e-4)


def test_training_denoises_the_targets_and_drops_the_condition_of_some_rows():
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model("toy_diffusion_lcm", condition_dropout=1.0))).train()
    x, target = torch.randn(3, 5, D), torch.randn(3, 5, D)
    torch.manual_seed(7)
    first = model(x, target=target)
    torch.manual_seed(7)
    second = model(x * 5, target=target)  # every row unconditional: the context does not matter
    torch.testing.assert_close(first, second)
    model.config.condition_dropout = 0.0
    torch.manual_seed(7)
    assert not torch.allclose(model(x, target=target), first, atol=1e-4)


def test_sampling_is_seeded_and_computes_only_the_positions_asked_for():
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model("toy_diffusion_lcm"))).eval()
    x = torch.randn(3, 6, D)
    last = torch.tensor([5, 2, 4])
    with torch.no_grad():
        full, again, selected = model(x), model(x), model(x, at=last)
        single = model(x[:, :1])  # one position per row: the same noise draw as sampling at position 0 only
        single_at = model(x[:, :1], at=torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(full, again)
    computed = selected.abs().sum(dim=-1) > 0
    assert computed.sum() == 3 and computed[torch.arange(3), last].all()
    assert torch.isfinite(selected).all()
    torch.testing.assert_close(single_at, single)


def test_the_predictor_asks_a_sampler_for_each_query_last_position_only():
    torch.manual_seed(0)
    model = fitted(as_if_trained(make_model("toy_diffusion_lcm"))).eval()
    vectors = np.random.default_rng(0).normal(size=(10, D)).astype(np.float32)
    queries = Queries(target=np.array([3, 9]), context_start=np.array([0, 6]), article=np.array([0, 1]))
    predicted = ModelPredictor(model, "diffusion").predict(vectors, queries)
    with torch.no_grad():
        expected = model(torch.from_numpy(np.stack([vectors[0:3], vectors[6:9]])), at=torch.tensor([2, 2]))[:, 2]
    np.testing.assert_allclose(predicted, expected.numpy(), atol=1e-5)


def test_the_diffusion_lcm_has_no_onnx_export_and_says_why(tmp_path):
    with pytest.raises(PipelineError, match="samples its prediction"):
        export_onnx(make_model("toy_diffusion_lcm"), tmp_path / "model.onnx", fixed_length=8)


def test_invalid_diffusion_settings_are_refused():
    with pytest.raises(ValueError, match="residual"):
        make_model("toy_diffusion_lcm", residual="last")
    with pytest.raises(ValueError, match="timesteps"):
        make_model("toy_diffusion_lcm", timesteps=1)
    assert isinstance(make_model("toy_diffusion_lcm"), DiffusionLCMModel)
