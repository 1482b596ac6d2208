"""Bad configs are refused before anything is loaded or written: one line on stderr naming the key,
the value and what is allowed; exit code 2; no run directory left behind. Runs src/train.py's
Hydra entry point in this process, as `python src/train.py <overrides>` would."""
from __future__ import annotations

import pytest
from train_cli import refused, train

from adabatch.validation import check_config

BAD_CONFIGS = {  # overrides: what the error line must say
    "batch_size.eta=0": "batch_size.eta=0 must be a number > 0",
    "batch_size.eta=-0.5": "batch_size.eta=-0.5 must be a number > 0",
    "batch_size=inner_product batch_size.theta=0": "batch_size.theta=0 must be a number > 0",
    "batch_size=augmented_inner_product batch_size.nu=-1": "batch_size.nu=-1 must be a number > 0",
    "batch_size=coordinate_norm batch_size.quantile=1.5": "batch_size.quantile=1.5",
    "batch_size=gns batch_size.multiple=0": "batch_size.multiple=0 must be a number > 0",
    "batch_size=gns batch_size.ema=1.0": "batch_size.ema=1.0 must be a number in [0, 1)",
    "batch_size.initial=600 batch_size.max=512": "batch_size.max=512 is below batch_size.initial=600",
    "batch_size.initial=1": "batch_size.initial=1 must be an integer >= 2: the tests need a sample variance",
    "batch_size.max_micro=0": "batch_size.max_micro=0 must be an integer >= 1 or auto",
    "batch_size.max_micro=biggest": "batch_size.max_micro=biggest must be an integer >= 1 or auto",
    "batch_size.max_micro_memory_gb=-2": "batch_size.max_micro_memory_gb=-2 must be a number of GiB > 0",
    "batch_size.max_micro_memory_gb=lots": "batch_size.max_micro_memory_gb=lots must be a number of GiB > 0",
    "batch_size.interval=0": "batch_size.interval=0 must be an integer >= 1",
    "batch_size.engine=jax": "batch_size.engine='jax' is unknown; choose one of ghost, ghost_measured, opacus, functorch",
    "batch_size=inner_product batch_size.ip_mode=local": "batch_size.ip_mode='local' is unknown",
    "batch_size=linear_ramp batch_size.increment=-4": "batch_size.increment=-4",
    "train.samples=0": "train.samples=0 must be an integer >= 1",
    "train.samples=-100": "train.samples=-100 must be an integer >= 1",
    "train.eval_every=0": "train.eval_every=0 must be an integer >= 1",
    "train.eval_first=0": "train.eval_first=0 must be an integer >= 1",
    "batch_size.finite_population=yes": "batch_size.finite_population=yes must be true or false",
    "train.checkpoint_every=0": "train.checkpoint_every=0 must be an integer >= 1",
    "train.precision=fp16": "train.precision='fp16' is unknown; choose one of fp32, bf16",
    "optimizer.name=sgd": "optimizer.name=sgd is the name of the shipped torch.optim.sgd.SGD, not of optimizer._target_=torch.optim.Adagrad",
    "optimizer.lr=-0.1": "optimizer.lr=-0.1 must be a number > 0",
    # issue 19, section 4: what got through, then its siblings (every numeric key's range, every list's order)
    "optimizer.lr=abc": "optimizer.lr=abc must be a number > 0",
    "seed=-1": "seed=-1 must be an integer from 0 to 18446744073709551615",
    "seed=1.5": "seed=1.5 must be an integer from 0 to",
    "schedule=cosine schedule.final_factor=-1": "schedule.final_factor=-1 must be a number >= 0",
    "schedule=multistep schedule.milestones=[500,100]":
        "schedule.milestones=[500, 100] must be a list of strictly increasing integers >= 1",
    "schedule=multistep schedule.milestones=[100,100]": "schedule.milestones=[100, 100] must be a list of strictly",
    "schedule=multistep schedule.milestones=[abc]": "schedule.milestones=['abc'] must be a list of strictly",
    "schedule=multistep schedule.gamma=0": "schedule.gamma=0 must be a number > 0",
    "schedule=linear schedule.final_factor=-0.5": "schedule.final_factor=-0.5 must be a number >= 0",
    "schedule.warmup_samples=-5": "schedule.warmup_samples=-5 must be an integer >= 0",
    "schedule.warmup_samples=abc": "schedule.warmup_samples=abc must be an integer >= 0",
    "schedule=cosine schedule.warmup_samples=500 schedule.end_samples=400":
        "schedule.end_samples=400 must be above schedule.warmup_samples=500",
    "optimizer.lr=0": "optimizer.lr=0 must be a number > 0",
    "optimizer.lr=true": "optimizer.lr=True must be a number > 0",
    "optimizer.eps=-1e-8": "optimizer.eps=-1e-08 must be a number >= 0",
    "optimizer.weight_decay=abc": "optimizer.weight_decay=abc must be a number >= 0",
    "optimizer.initial_accumulator_value=-1": "optimizer.initial_accumulator_value=-1 must be a number >= 0",
    "optimizer=sgdm optimizer.momentum=1.5": "optimizer.momentum=1.5 must be a number in [0, 1)",
    "optimizer=sgdm optimizer.nesterov=maybe": "optimizer.nesterov=maybe must be true or false",
    "optimizer=adam optimizer.betas=[0.9]": "optimizer.betas=[0.9] must be two numbers in [0, 1)",
    "optimizer=adam optimizer.betas=[abc,0.9]": "optimizer.betas=['abc', 0.9] must be two numbers in [0, 1)",
    "train.eval_train_examples=0": "train.eval_train_examples=0 must be an integer >= 1, or null (all)",
    "train.progress_every_s=abc": "train.progress_every_s=abc must be a number of seconds >= 0",
    "train.compile=yes": "train.compile=yes must be true or false",
    "train.memory_format=nhwc": "train.memory_format='nhwc' is unknown; choose one of contiguous, channels_last",
    "train.save_model=1": "train.save_model=1 must be true or false",
    "dataset=mnist dataset.download=no": "dataset.download=no must be true or false",
    "batch_size.eta=abc": "batch_size.eta=abc must be a number > 0",
    "batch_size.interval=1.5": "batch_size.interval=1.5 must be an integer >= 1",
    "batch_size.max=1e9": "batch_size.max=1000000000.0 must be an integer",
    "batch_size.initial=true": "batch_size.initial=True must be an integer",
    "batch_size=coordinate_norm batch_size.quantile=abc": "batch_size.quantile=abc must be a number in (0, 1]",
    "batch_size=linear_ramp batch_size.increment=2.5": "batch_size.increment=2.5 must be an integer >= 1",
    "batch_size=stagewise batch_size.stages=[]": "batch_size.stages=[] must be null (doubling",
    "batch_size=stagewise batch_size.initial=32 batch_size.stages=[32,16]": "batch_size.stages=[32, 16] must be",
    "model=mlp model.hidden=[64,0]": "model.hidden=[64, 0] must be a list of integers >= 1",
    "model=resnet18 model.width=abc": "model.width=abc must be an integer >= 1",
    "model=vit model.dim=0": "model.dim=0 must be an integer >= 1",
    "model=vit model.depth=1.5": "model.depth=1.5 must be an integer >= 1",
    "model=vit +model.dropout=1": "model.dropout=1 must be a number in [0, 1)",
    "model=vit model.mlp_ratio=abc": "model.mlp_ratio=abc must be a number > 0",
    "model=vit +model.dropout=0.1 batch_size.engine=functorch":
        "batch_size.engine=functorch cannot run a model with dropout (model.dropout=0.1)",
    "+optimizer.nesterov=true": "optimizer.nesterov is not a parameter of torch.optim.adagrad.Adagrad (optimizer=adagrad); its parameters are lr,",
    "dataset.name=mnist": "dataset.name=mnist is the name of the shipped adabatch.data.sources.mnist",
    "dataset._target_=mypkg.data.imagenet": "dataset._target_=mypkg.data.imagenet cannot be imported (No module named 'mypkg')",
    "dataset=npz": "dataset.path is required by dataset=npz: add dataset.path=<value> to the command line",
    "dataset.augmentation=mixup": "dataset.augmentation='mixup' is unknown; choose one of none, crop_flip, vit",
    "model.name=vit": "model.name=vit is the name of the shipped adabatch.models.vit.vit, not of model._target_=adabatch.models.cnn",
    "model._target_=adabatch.models.NORM_POLICIES":
        "model._target_=adabatch.models.NORM_POLICIES is a tuple, not a class or function",
    "model._target_=adabatch.models.resnet1000": "model._target_=adabatch.models.resnet1000 cannot be imported",
    "model=resnet18 model.norm=layer": "model.norm='layer' is unknown; choose one of",
    "+model.depth=3": "model.depth is not a parameter of adabatch.models.cnn.cnn (model=cnn); its parameters are none",
    "model=resnet18 model.norm=batch": "batch_size=norm needs per-example gradients, which BatchNorm does not have",
    "schedule.name=cosine": "schedule.name=cosine is the name of the shipped adabatch.schedules.cosine",
    "device=tpu": "device='tpu' is unknown; choose one of auto, cpu, cuda",
    "logger.name=nope": "logger.name='nope' is unknown; choose one of none, wandb",
    "resume=sometimes": "resume='sometimes' is unknown; choose one of auto, never, must",
    "resume=must": "resume=must but",
}


@pytest.mark.parametrize("overrides", BAD_CONFIGS)
def test_a_bad_config_is_one_clear_line_with_exit_code_2_and_no_debris(overrides, tmp_path, capsys):
    device = [] if "device=" in overrides else ["device=cpu"]
    code, stderr = refused([*overrides.split(), *device, f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and BAD_CONFIGS[overrides] in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_rejected_config_leaves_an_earlier_run_untouched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    code, _ = refused(["device=cpu", "batch_size.eta=0", f"hydra.run.dir={run_dir}"], capsys)
    assert code == 2
    assert [p.name for p in run_dir.iterdir()] == ["metrics.jsonl"]
    assert (run_dir / "metrics.jsonl").read_text() == '{"kind": "train", "step": 1}\n'


def test_a_run_checks_its_config_once(tmp_path, monkeypatch):
    """train() checks before it takes the run directory, and builds the experiment without checking again."""
    from adabatch.run import experiment, loop

    calls = []
    counted = lambda cfg, world: calls.append(world) or check_config(cfg, world)  # noqa: E731
    monkeypatch.setattr(loop, "check_config", counted)
    monkeypatch.setattr(experiment, "check_config", counted)
    train(["device=cpu", "train.samples=16", "train.eval_every=16", "train.eval_train_examples=8",
           "batch_size.initial=4", "batch_size.max=8", "train.save_model=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert len(calls) == 1 and (tmp_path / "run" / "summary.json").exists()
