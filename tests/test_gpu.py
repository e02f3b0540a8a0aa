"""The CUDA path: generation in fp32 and under autocast, and training steps, against the CPU.

Marked ``gpu`` (excluded from the default run; ``pytest -m gpu``) and ``system("cuda")``:
skipped with a reason where torch sees no CUDA device, a failure under
PTALKER_REQUIRE_SYSTEM_TESTS=1 (on a GPU machine: ``PTALKER_REQUIRE_SYSTEM_TESTS=1 pytest -m gpu``).
"""

import pytest
import torch

DEVICE = "cuda"
pytestmark = [pytest.mark.gpu, pytest.mark.system("cuda")]


@pytest.fixture
def no_tf32(monkeypatch):
    """Full fp32 on the GPU (TF32 convolutions/matmuls round to 10 mantissa bits)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _amp_dtype():
    if DEVICE == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@pytest.fixture(scope="module")
def case():
    from ptalker_cli.inference import tiny_model

    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(2, 24000, generator=g)  # 1.5 s, batch of two
    template = model.template.unsqueeze(0).expand(2, -1, -1)
    with torch.inference_mode():
        ref = model.generate(audio, template)
    return model, audio, template, ref


def _on_device(model, audio, template, autocast):
    from ptalker_cli.inference import tiny_model

    m = tiny_model().to(DEVICE)  # the same seeded weights; the CPU one stays where it is
    assert all(torch.equal(a, b.cpu()) for a, b in zip(model.state_dict().values(), m.state_dict().values()))
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=_amp_dtype(), enabled=autocast):
        out = m.generate(audio.to(DEVICE), template.to(DEVICE))
    assert out.device.type == DEVICE
    return out.float().cpu()


def test_generate_fp32_matches_cpu(case, no_tf32):
    model, audio, template, ref = case
    out = _on_device(model, audio, template, autocast=False)
    disp, ref_disp = out - template[:, None], ref - template[:, None]
    assert ref_disp.abs().max() > 0.1  # the tiny model's head is random: the face moves
    assert out.shape == ref.shape and torch.isfinite(out).all()
    # fp32 on both sides: only the order of the sums differs
    assert (disp - ref_disp).abs().max() <= 1e-3 * ref_disp.abs().max(), float((disp - ref_disp).abs().max())


def test_generate_amp_is_close_to_cpu(case):
    model, audio, template, ref = case
    out = _on_device(model, audio, template, autocast=True)
    disp, ref_disp = out - template[:, None], ref - template[:, None]
    assert out.shape == ref.shape and torch.isfinite(out).all()
    # half precision through an autoregressive decoder: the same motion within a few percent
    # (on the CPU, bf16 autocast gives 4.9 % relative L2 error and cosine 0.9988 on this case)
    assert _rel(disp, ref_disp) <= 0.15, _rel(disp, ref_disp)
    cos = torch.nn.functional.cosine_similarity(disp.flatten(), ref_disp.flatten(), dim=0)
    assert cos > 0.99, float(cos)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("gpu-data") / "ds"
    make_fake_dataset(root, frames=16)
    return root


def _trainer(dataset, out, device, amp):
    from ptalker_cli.train import TrainConfig
    from ptalker_cli.train.trainer import Trainer

    cfg = TrainConfig(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0,
                      device=device, amp=amp).validate()
    t = Trainer(cfg, quiet=True)
    t.setup()
    return t


def _step(t):
    t._enter_stage(1)  # as fit() does before its first batch (tests/test_train.py does the same)
    batch = next(iter(t.train_loader))
    losses = t.train_micro_batch(batch, p_tf=1.0)
    return losses, t.optimizer_step()


def test_train_step_fp32_matches_cpu(dataset, tmp_path, no_tf32):
    """One optimizer step, dropout off (eval mode) so both devices compute the same function."""
    results = {}
    for i, device in enumerate(("cpu", DEVICE)):
        t = _trainer(dataset, tmp_path / f"run{i}", device, "off")
        t.model.eval()
        before = {n: p.detach().float().cpu().clone() for n, p in t.model.named_parameters()}
        losses, norm = _step(t)
        after = {n: p.detach().float().cpu() for n, p in t.model.named_parameters()}
        assert next(t.model.parameters()).device.type == torch.device(device).type
        results[device] = (losses, norm, before, after)
    (l_cpu, n_cpu, b_cpu, a_cpu), (l_dev, n_dev, b_dev, a_dev) = results["cpu"], results[DEVICE]
    assert all(torch.equal(b_cpu[n], b_dev[n]) for n in b_cpu)  # same initial weights
    assert l_dev["total"] == pytest.approx(l_cpu["total"], rel=1e-3)
    assert n_dev == pytest.approx(n_cpu, rel=1e-2)
    d_cpu = torch.cat([(a_cpu[n] - b_cpu[n]).flatten() for n in a_cpu])
    d_dev = torch.cat([(a_dev[n] - b_dev[n]).flatten() for n in a_dev])
    assert d_cpu.abs().max() > 0  # the step updated the weights, by the same amounts on both devices
    assert _rel(d_dev, d_cpu) <= 0.05, _rel(d_dev, d_cpu)


def test_train_steps_with_amp(dataset, tmp_path):
    t = _trainer(dataset, tmp_path / "amp", DEVICE, "auto")
    assert t.amp in (torch.bfloat16, torch.float16)
    before = [p.detach().clone() for p in t.model.parameters()]
    totals = []
    for _ in range(3):
        losses, norm = _step(t)
        totals.append(losses["total"])
        assert torch.isfinite(torch.tensor(norm))
    assert all(torch.isfinite(torch.tensor(totals)))
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(t.model.parameters(), before))
