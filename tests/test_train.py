"""``ptalker train``: configuration, the loop, stages, scheduled sampling, checkpoints and logs.

The resume-after-SIGKILL and DDP tests are in tests/test_train_processes.py.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from ptalker_cli.errors import ConfigError
from ptalker_cli.train import TrainConfig, build_config, parse_assignments, teacher_forcing_probability
from ptalker_cli.train.logging import read_metrics


@pytest.fixture
def one_thread():
    """One CPU thread: tiny models train much faster without OpenMP overhead (and under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ptalker_cli.data.testing import make_fake_dataset

    root = tmp_path_factory.mktemp("train-data") / "ds"
    make_fake_dataset(root, frames=16)
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["splits"]["one"] = ["A_s01"]  # a single sequence, for the overfitting test
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def _cfg(dataset, out, **kw):
    base = dict(data=str(dataset), out=str(out), preset="tiny", tensorboard=False, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()


def _trainer(cfg, **kw):
    from ptalker_cli.train.trainer import Trainer

    t = Trainer(cfg, quiet=True, **kw)
    t.setup()
    return t


# ----------------------------------------------------------------------- configuration
def test_config_layers_toml_flags_and_set(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "vocaset"\nepochs = 5\nlr = 1e-4\n[model]\ndropout = 0.2\n[loss]\nadv = 0.5\n')
    from ptalker_cli.train.config import load_toml

    cfg = build_config(load_toml(toml), {"data": "d", "epochs": 7},
                       parse_assignments(["lr=2e-4", "model.motion_dropout=0.3", "loss.vel=5", "amp=off",
                                          "betas=[0.8, 0.9]"]))
    assert (cfg.preset, cfg.epochs, cfg.lr, cfg.amp, cfg.betas) == ("vocaset", 7, 2e-4, "off", (0.8, 0.9))
    assert cfg.model == {"dropout": 0.2, "motion_dropout": 0.3}
    loss = cfg.loss_config()
    assert (loss.adv, loss.vel, loss.mouth) == (0.5, 5.0, 1.2)
    with pytest.raises(ConfigError, match="unknown training option"):
        build_config({"data": "d", "learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown model option"):
        build_config({"data": "d", "model": {"width": 3}})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["lr"])
    with pytest.raises(ConfigError, match="must be a number"):
        build_config({"data": "d", "lr": "fast"})


def test_loss_presets_and_ablations():
    released = TrainConfig(data="d", loss_preset="released").loss_config()
    assert (released.form, released.adv, released.cos) == ("mse", 1e-5, 0.0)
    no_cts = TrainConfig(data="d", ablation="no-cts", loss={"kl": 0.5}).loss_config()
    assert no_cts.topk == 0.0 and no_cts.kl == 0.5  # explicit values win over the ablation
    assert TrainConfig(data="d", ablation="no-gat").model_overrides() == {"use_graph_encoder": False}
    with pytest.raises(ConfigError, match="unknown ablation"):
        TrainConfig(data="d", ablation="no-everything").validate()


@pytest.mark.parametrize("kind", ["linear", "inverse_sigmoid"])
def test_scheduled_sampling_reaches_free_running(kind):
    cfg = TrainConfig(data="d", scheduled_sampling=kind, ss_start_epoch=2, ss_end_epoch=12, ss_k=3)
    ps = [teacher_forcing_probability(cfg, e / 4) for e in range(0, 80)]
    assert ps[0] == 1.0 and teacher_forcing_probability(cfg, 2.0) == 1.0
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # non-increasing
    assert teacher_forcing_probability(cfg, 12.0) == 0.0 and teacher_forcing_probability(cfg, 50.0) == 0.0
    assert 0.0 < teacher_forcing_probability(cfg, 7.0) < 1.0
    assert teacher_forcing_probability(TrainConfig(data="d"), 1e6) == 1.0  # "off"


# ----------------------------------------------------------------------- setup from the dataset
def test_model_config_comes_from_the_dataset(dataset, tmp_path, one_thread):
    t = _trainer(_cfg(dataset, tmp_path / "run", model={"feature_dim": 8, "decoder_heads": 2}))
    mc = t.model.config
    assert (mc.topology, mc.num_vertices, mc.fps, mc.period) == ("tiny", 192, 25.0, 25)
    assert mc.train_subjects == ("A", "B") and mc.template_subjects == ("A", "B", "C")
    assert mc.feature_dim == 8
    from ptalker_cli.data.layout import DatasetLayout

    layout = DatasetLayout(dataset)
    for i, s in enumerate(mc.template_subjects):
        assert np.allclose(t.model.subject_templates[i].numpy(), layout.load_template(s))
    topo = layout.load_topology()
    assert np.array_equal(t.model.lip_index.numpy(), topo.regions["lip"])
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["train"]["preset"] == "tiny" and saved["model"]["train_subjects"] == ["A", "B"]
    assert saved["loss"]["mouth"] == 1.2 and saved["dataset"]["train_sequences"] == 4


def test_refuses_test_split_and_existing_runs(dataset, tmp_path, one_thread):
    with pytest.raises(ConfigError, match="test"):
        _trainer(_cfg(dataset, tmp_path / "a", val_split="test"))
    with pytest.raises(ConfigError, match="no 'nope' split"):
        _trainer(_cfg(dataset, tmp_path / "b", val_split="nope"))
    from ptalker_cli.train.trainer import train

    cfg = _cfg(dataset, tmp_path / "c", epochs=1, max_steps=1)
    train(cfg, quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, quiet=True)
    train(cfg, quiet=True, force=True)  # starting over is explicit


# ----------------------------------------------------------------------- the loop
def test_total_loss_falls(dataset, tmp_path, one_thread):
    from ptalker_cli.train.trainer import train

    res = train(_cfg(dataset, tmp_path / "run", epochs=10, lr=3e-3, val_every=5, save_every_epochs=5), quiet=True)
    assert res.steps == 40
    rows = read_metrics(tmp_path / "run", "step")
    assert [r["step"] for r in rows] == list(range(1, 41))
    first = np.mean([r["total"] for r in rows[:4]])
    last = np.mean([r["total"] for r in rows[-4:]])
    assert last < 0.8 * first, (first, last)
    assert np.mean([r["rec"] for r in rows[-4:]]) < 0.6 * np.mean([r["rec"] for r in rows[:4]])
    epochs = read_metrics(tmp_path / "run", "epoch")
    assert [e["epoch"] for e in epochs] == list(range(1, 11))
    assert "val_objective" in epochs[4] and "val_objective" not in epochs[3] and "val_lve" in epochs[9]
    # CSV mirrors of the JSONL rows
    assert len((tmp_path / "run" / "steps.csv").read_text().splitlines()) == 41
    assert len((tmp_path / "run" / "epochs.csv").read_text().splitlines()) == 11


def test_overfits_one_sequence(dataset, tmp_path, one_thread):
    """Lip error (mean over frames of the max over lip vertices of the squared error) falls > 90 %."""
    from ptalker_cli.train.trainer import Trainer

    cfg = _cfg(dataset, tmp_path / "run", train_split="one", val_split="one", epochs=25, lr=3e-3,
               val_every=1000, save_every_epochs=1000,
               model={"dropout": 0.0, "motion_dropout": 0.0, "identity_dropout": 0.0})
    t = Trainer(cfg, quiet=True)
    t.setup()
    before = t.validate()["val_lve"]
    res = t.fit()
    after = t.validate()["val_lve"]
    assert res.steps == 25
    assert after < 0.1 * before, (before, after)
    # the run folder is the best model and loads strictly
    from ptalker_cli.model.network import PTalker

    loaded = PTalker.from_pretrained(tmp_path / "run")
    for k, v in t.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.cpu()), k


def test_stage_one_freezes_style_encoders_and_stage_two_unfreezes(dataset, tmp_path, one_thread):
    from ptalker_cli.train.trainer import CLASSIFIER_MODULES, CONTENT_MODULES, style_parameters

    t = _trainer(_cfg(dataset, tmp_path / "run", stage1_epochs=1, epochs=2))
    m = t.model
    style = style_parameters(m)
    assert {n.split(".")[0] for n, _ in style} == {"audio_style", "style_motion", "identity"}
    style_trainable = [(n, p) for n, p in style if n in t.trainable]
    before = {n: p.detach().clone() for n, p in style}
    batch = next(iter(t.train_loader))

    def grads(prefixes):
        return {n: p.grad for n, p in m.named_parameters() if n.split(".")[0] in prefixes and n in t.trainable}

    t._enter_stage(1)
    assert all(not p.requires_grad for _, p in style)
    t.train_micro_batch(batch, 1.0)
    assert all(p.grad is None for _, p in style)
    content = grads(CONTENT_MODULES)
    assert content and sum(g is not None for g in content.values()) >= 0.9 * len(content)
    classifiers = grads(CLASSIFIER_MODULES)
    assert classifiers and all(g is not None for g in classifiers.values())
    assert all(g is not None for n, g in grads(("decoder",)).items())
    t.optimizer_step()
    assert all(torch.equal(p, before[n]) for n, p in style)  # excluded from the update

    t._enter_stage(2)
    t.train_micro_batch(batch, 1.0)
    assert all(p.requires_grad for _, p in style_trainable)
    assert all(p.grad is not None for _, p in style_trainable)
    # frozen-from-the-start parameters (the speech CNN front ends) stay frozen
    cnn = [p for n, p in m.named_parameters() if "feature_extractor" in n]
    assert cnn and all(not p.requires_grad and p.grad is None for p in cnn)
    t.optimizer_step()
    assert any(not torch.equal(p, before[n]) for n, p in style_trainable)


def test_paper_presets_train_in_two_stages_by_default(tmp_path):
    """biwi and vocaset: stage 1 = the first half of the epochs unless stage1_epochs is given; other presets
    one stage. Resolved when the options are built, so train_config.json and --resume keep the value."""
    from ptalker_cli.train.config import TWO_STAGE_PRESETS

    assert TWO_STAGE_PRESETS == ("biwi", "vocaset")
    for name in TWO_STAGE_PRESETS:
        assert TrainConfig(data="d", preset=name).stage1_epochs == 50  # epochs 100
        assert TrainConfig(data="d", preset=name, epochs=7).stage1_epochs == 3
        assert TrainConfig(data="d", preset=name, stage1_epochs=0).stage1_epochs == 0  # one stage, explicitly
    for name in ("tiny", "faceformer", "synthtalk"):
        assert TrainConfig(data="d", preset=name).stage1_epochs == 0
    assert build_config({"data": "d", "preset": "vocaset", "epochs": 9}).stage1_epochs == 4
    assert build_config({"data": "d", "preset": "biwi"}, parse_assignments(["stage1_epochs=5"])).stage1_epochs == 5

    import typer
    from typer.testing import CliRunner

    from ptalker_cli.cli.train_cmd import train as train_cmd

    app = typer.Typer()
    app.command()(train_cmd)
    for extra, expected in (([], 50), (["--epochs", "30"], 15), (["--set", "stage1_epochs=0"], 0),
                            (["--stage1-epochs", "2"], 2), (["--preset", "tiny"], 0)):
        res = CliRunner().invoke(app, ["--data", "d", "--preset", "vocaset", *extra, "--print-config"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["stage1_epochs"] == expected, extra


def test_default_two_stage_run_freezes_the_style_encoders(dataset, tmp_path, one_thread):
    """A biwi-preset run (its sizes and speech encoders shrunk, the preset's schedule untouched) with 2 epochs
    and no stage1_epochs: epoch 0 is stage 1 (style encoders unchanged, the rest trains), epoch 1 stage 2."""
    from ptalker_cli.config import tiny_speech_encoder
    from ptalker_cli.train.trainer import Trainer, style_parameters

    small = {"feature_dim": 16, "decoder_layers": 1, "decoder_ffn_dim": 32, "motion_encoder_layers": 1,
             "motion_conv_layers": 1, "audio_style_hidden": 16, "club_hidden": 16,
             "audio_content": dataclasses.asdict(tiny_speech_encoder("hubert")),
             "audio_style": [dataclasses.asdict(tiny_speech_encoder("wav2vec2"))] * 2}
    cfg = TrainConfig(data=str(dataset), out=str(tmp_path / "run"), preset="biwi", model=small, epochs=2,
                      max_steps=4, tensorboard=False, progress=False, seed=0, val_split="none").validate()
    assert cfg.stage1_epochs == 1
    t = Trainer(cfg, quiet=True)
    t.setup()
    assert t.batches_per_epoch == 4  # so max_steps=4 stops at the end of epoch 0, the last epoch of stage 1
    m = t.model
    style = {n: p.detach().clone() for n, p in style_parameters(m) if n in t.trainable}
    assert {n.split(".")[0] for n in style} == {"audio_style", "style_motion", "identity"}
    others = {n: p.detach().clone() for n, p in m.named_parameters() if n in t.trainable and n not in style}
    t.fit()
    params = dict(m.named_parameters())
    assert [n for n, v in style.items() if not torch.equal(params[n], v)] == [], "stage 1 changed style encoders"
    assert sum(not torch.equal(params[n], v) for n, v in others.items()) >= 0.9 * len(others)
    # epoch 1 (stage 2, resumed from the checkpoint): the style encoders train
    t2 = Trainer(cfg.replace(max_steps=8), resume=True, quiet=True)
    t2.fit()
    params = dict(t2.model.named_parameters())
    assert sum(not torch.equal(params[n], v) for n, v in style.items()) >= 0.9 * len(style)
    assert [r["stage"] for r in read_metrics(tmp_path / "run", "step")] == [1] * 4 + [2] * 4


def test_two_stage_run_logs_both_stages(dataset, tmp_path, one_thread):
    from ptalker_cli.train.trainer import train

    train(_cfg(dataset, tmp_path / "run", stage1_epochs=1, epochs=2, scheduled_sampling="linear",
               ss_end_epoch=1.0, save_every_epochs=2), quiet=True)
    rows = read_metrics(tmp_path / "run", "step")
    assert [r["stage"] for r in rows] == [1] * 4 + [2] * 4
    tf = [r["teacher_forcing"] for r in rows]
    assert tf[0] == 1.0 and 0 < tf[2] < 1 and tf[4:] == [0.0] * 4


def test_scheduled_sampling_feeds_predictions(dataset, tmp_path, one_thread):
    t = _trainer(_cfg(dataset, tmp_path / "run", model={"dropout": 0.0, "motion_dropout": 0.0,
                                                        "identity_dropout": 0.0}))
    with torch.no_grad():
        t.model.vertice_decoder.weight.normal_(0, 0.05)
    t.model.eval()  # no dropout (the speech encoders' own dropout included)
    b = t._to_device(next(iter(t.train_loader)))
    assert t.sampled_inputs(b, 1.0) is None
    free = t.sampled_inputs(b, 0.0)
    with torch.no_grad():
        pred = t.model(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                       b["frame_mask"]).vertices
    assert torch.allclose(free, pred, atol=1e-6)  # p = 0: every fed-back frame is the model's own
    half = t.sampled_inputs(b, 0.5)
    is_gt = (half == b["vertices"]).flatten(2).all(-1)
    assert 0 < is_gt.float().mean() < 1


def test_multiple_passes_give_free_running_prefix(dataset, tmp_path, one_thread):
    """With p = 0 and n passes the first n fed-back frames equal autoregressive decoding."""
    t = _trainer(_cfg(dataset, tmp_path / "run", ss_passes=3,
                      model={"dropout": 0.0, "motion_dropout": 0.0, "identity_dropout": 0.0}))
    with torch.no_grad():
        t.model.vertice_decoder.weight.normal_(0, 0.05)
    t.model.eval()
    b = t._to_device(next(iter(t.train_loader)))
    inputs = t.sampled_inputs(b, 0.0)
    # autoregressive reference: feed back frame by frame
    src = b["vertices"].clone()
    with torch.no_grad():
        for i in range(3):
            pred = t.model(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                           b["frame_mask"], inputs=src).vertices
            src[:, i] = pred[:, i]
    assert torch.allclose(inputs[:, :3], src[:, :3], atol=1e-5)


def test_grad_accumulation_and_max_steps(dataset, tmp_path, one_thread):
    from ptalker_cli.train.trainer import train

    res = train(_cfg(dataset, tmp_path / "run", epochs=3, grad_accum=3, max_steps=3), quiet=True)
    rows = read_metrics(tmp_path / "run", "step")
    # 4 batches per epoch, 3 per step: steps of 3 + 1 batches per epoch; stop after 3 steps (mid epoch 2)
    assert res.steps == 3 and [r["epoch"] for r in rows] == [1, 1, 2]
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 3, 3)


# ----------------------------------------------------------------------- checkpoints
def test_optimizer_and_rng_state_round_trip(tmp_path):
    import random

    from ptalker_cli.train import checkpoint as ckpt

    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3, betas=(0.8, 0.9))
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.optimizer_to_parts(opt)
    json.dumps(meta)  # JSON-able
    lin2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(lin2.parameters(), lr=5.0)
    ckpt.optimizer_from_parts(opt2, tensors, meta)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9) and opt2.param_groups[0]["lr"] == 1e-3
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(s1[k], s2[k]) for k in s1)

    state = ckpt.capture_rng()
    json.dumps({k: state[k] for k in ("python", "numpy")})
    a = (torch.rand(3), np.random.rand(), random.random())
    ckpt.restore_rng(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_checkpoint_swap_recovers_from_a_crash(dataset, tmp_path, one_thread):
    from ptalker_cli.train import checkpoint as ckpt
    from ptalker_cli.train.trainer import train

    run = tmp_path / "run"
    train(_cfg(dataset, run, epochs=1, max_steps=2), quiet=True)
    assert ckpt.find_checkpoint(run) == run / "last"
    assert not (run / ".last.tmp").exists() and not (run / ".last.old").exists()
    # a crash between the two renames leaves only .last.old: it is still found
    (run / "last").rename(run / ".last.old")
    (run / ".last.tmp").mkdir()  # a half-written new checkpoint is ignored
    assert ckpt.find_checkpoint(run) == run / ".last.old"
    res = train(_cfg(dataset, run, epochs=1), quiet=True, resume=True)
    assert res.steps == 4 and ckpt.find_checkpoint(run) == run / "last"
    assert not math.isnan(res.best_value)


def test_no_validation_split_keeps_the_last_model(dataset, tmp_path, one_thread):
    from ptalker_cli.model.network import PTalker
    from ptalker_cli.train.trainer import train

    run = tmp_path / "run"
    train(_cfg(dataset, run, epochs=1, val_split="none"), quiet=True)
    last = PTalker.from_pretrained(run / "last")
    root = PTalker.from_pretrained(run)
    for k, v in last.state_dict().items():
        assert torch.equal(root.state_dict()[k], v)


# ----------------------------------------------------------------------- CLI
def test_cli_print_config_and_animate_from_run(dataset, tmp_path, wav_file, one_thread):
    import typer
    from typer.testing import CliRunner

    from ptalker_cli.cli.train_cmd import train as train_cmd

    app = typer.Typer()
    app.command()(train_cmd)
    runner = CliRunner()
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 9\n[loss]\nvel = 3.0\n')
    res = runner.invoke(app, ["--data", str(dataset), "--config", str(toml), "--epochs", "2", "--set", "lr=1e-3",
                              "--set", "loss.adv=0", "--print-config"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["epochs"] == 2 and shown["lr"] == 1e-3 and shown["loss"] == {"vel": 3.0, "adv": 0}

    run = tmp_path / "run"
    res = runner.invoke(app, ["--data", str(dataset), "--preset", "tiny", "--out", str(run), "--epochs", "1",
                              "--set", "tensorboard=false", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--out", str(run), "--resume", "--epochs", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 8

    from ptalker_cli.cli.app import app as main_app

    out = tmp_path / "anim.npy"
    res = runner.invoke(main_app, ["animate", str(wav_file(1.0)), "-o", str(out), "--model", str(run),
                                   "--subject", "A", "--quiet"])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape[1:] == (192, 3)


def test_autoregressive_rollout_feeds_the_inference_engines_frames(dataset, tmp_path, one_thread):
    """ss_rollout = "autoregressive": at p = 0 the fed-back frames are exactly what generate() decodes
    (free-running, refinement passes included), not a teacher-forced pass's prediction."""
    from ptalker_cli.model.decoding import StyleSpec

    t = _trainer(_cfg(dataset, tmp_path / "run", ss_rollout="autoregressive",
                      model={"dropout": 0.0, "motion_dropout": 0.0, "identity_dropout": 0.0}))
    with torch.no_grad():
        t.model.vertice_decoder.weight.normal_(0, 0.05)
    t.model.train()
    b = t._to_device(next(iter(t.train_loader)))
    assert t.sampled_inputs(b, 1.0) is None
    free = t.sampled_inputs(b, 0.0)
    assert t.model.training  # the rollout ran in eval mode and put training back
    ref = t.model.eval().generate(b["audio"], b["template"], StyleSpec(t.model.one_hot(b["subject_index"])),
                           audio_lengths=b["audio_lengths"])
    n = min(ref.shape[1], free.shape[1])
    assert n > 1 and torch.allclose(free[:, :n], ref[:, :n], atol=1e-6)
    with torch.no_grad():
        teacher = t.model.eval()(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                                 b["frame_mask"]).vertices
    assert not torch.allclose(free[:, :n], teacher[:, :n], atol=1e-4)  # a different thing from ss_rollout="teacher"
    out = t.model.train()(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                          b["frame_mask"], inputs=free)
    out.vertices.sum().backward()  # inference tensors would refuse this


def test_ss_rollout_is_checked():
    with pytest.raises(ConfigError, match="ss_rollout"):
        TrainConfig(data="d", ss_rollout="beam").validate()
