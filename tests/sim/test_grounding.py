"""Grounding tests: the catalog profiles reproduce published measurements (issue 30).

Every check cites its source (the profile's TOML header gives the full reference, the
number taken and, where the number is remembered rather than looked up, its range) and
states its tolerance. Each check is a function of the profile, so that a second test can
show it fails on the pre-issue-30 calibration: a later change that breaks what was
reproduced makes these tests fail.

Top-1 error is read as validation loss by equal relative change (the profiles' header;
docs/SIMULATOR.md): 23.6 % -> 24.6 % error is +4.2 % loss.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from jpo.sim.response import (
    ClusterConditions,
    WorkloadProfile,
    load_profile,
    lr_ratio,
    predict,
    val_loss_curve,
)
from jpo.workload.constraints import load_constraints
from jpo.workload.types import Hyperparameters

CLEAN = ClusterConditions(contention=0.0, contention_amplitude=0.0, noise=0.0, loss_noise=0.0)
GIB_MIB = 1024.0
WORKLOADS = Path(__file__).resolve().parents[2] / "configs" / "workloads"

# [G17] Goyal et al. 2017, Table 1 / Figure 1: top-1 error 23.60 % at B=256; 23.74 % at
# 8k; about +1 point at 16k and +4 points at 32k (read off the figure: +0.5..+2 and
# +2.5..+6 points). As relative val-loss changes against B=256 (error / 23.6):
GOYAL_BASE_ERROR = 23.6
GOYAL_FLAT_MAX = 0.02  # flat to 8k: within 2 % (23.74/23.60 = +0.6 %, plus seed spread)
GOYAL_16K = (0.5 / GOYAL_BASE_ERROR, 2.0 / GOYAL_BASE_ERROR)  # +2.1 % .. +8.5 %
GOYAL_32K = (2.5 / GOYAL_BASE_ERROR, 6.0 / GOYAL_BASE_ERROR)  # +10.6 % .. +25.4 %

# [TV] torchvision IMAGENET1K_V1 top-1 accuracy: ResNet-50 76.13, -101 77.37, -152 78.31.
TV_ERROR = {50: 23.87, 101: 22.63, 152: 21.69}
DEPTH_TOLERANCE = 0.5  # the model's relative change within +-50 % of the published one

# Reference recipes the defaults follow (each profile's [defaults] cites it).
RECIPES = {
    # [H16]/[G17]: batch 256, lr 0.1, 90 epochs
    "imagenet-resnet50": Hyperparameters(
        batch_size=256, learning_rate=0.1, num_layers=50, epochs=90
    ),
    # [KL]/[H16]: batch 128, lr 0.1, 200 epochs
    "cifar10-resnet18": Hyperparameters(
        batch_size=128, learning_rate=0.1, num_layers=18, epochs=200
    ),
    # [D19] §4.2: batch 32, lr 5e-5, 3 epochs
    "squad-bert-large": Hyperparameters(batch_size=32, learning_rate=5e-5, num_layers=24, epochs=3),
    # [TL19]: lr 0.256 at batch 4096 (0.016 at 256), 350 epochs
    "imagenet-efficientnet": Hyperparameters(
        batch_size=256, learning_rate=0.016, num_layers=16, epochs=350
    ),
    # [U5R]/[U5H] ultralytics/yolov5: yolov5s from scratch, batch 64, lr0 0.01, 300 epochs
    "coco-yolov5": Hyperparameters(batch_size=64, learning_rate=0.01, num_layers=24, epochs=300),
    # [MMS] mmsegmentation DeepLabV3 R-101-D8 512x1024 80k: 4 x 2 images, lr 0.01, 215 epochs
    "cityscapes-deeplabv3": Hyperparameters(
        batch_size=8, learning_rate=0.01, num_layers=101, epochs=215
    ),
    # [SF] PySlowFast X3D_M: 16 clips per GPU (x 2 GPUs), lr 0.1 x 32/128, 300 epochs
    "kinetics-x3d": Hyperparameters(batch_size=32, learning_rate=0.025, num_layers=26, epochs=300),
    # [DLRM] dlrm_s_criteo_kaggle.sh: SGD lr 0.1, mini-batch 128, 4 + 3 MLP layers, 1 epoch
    "criteo-dlrm": Hyperparameters(batch_size=128, learning_rate=0.1, num_layers=7, epochs=1),
    # [HFS] HF Flax summarization: bart-base on xsum, batch 64, lr 5e-5, 6 epochs
    "xsum-bart": Hyperparameters(batch_size=64, learning_rate=5e-5, num_layers=12, epochs=6),
    # [ESP] ESPnet librispeech_100 conformer: 12 blocks, 70 epochs, lr 0.002 per ~320
    # utterances (80 per step x accum_grad 4, derived), linearly scaled to the step: 5e-4
    "librispeech-conformer": Hyperparameters(
        batch_size=80, learning_rate=5e-4, num_layers=12, epochs=70
    ),
    # [VC] omihub777/ViT-CIFAR: batch 128, Adam 1e-3, 7 layers, 200 epochs
    "cifar100-vit": Hyperparameters(batch_size=128, learning_rate=1e-3, num_layers=7, epochs=200),
    # [NCF] the NCF authors' NeuMF: batch 256, Adam 1e-3, layers [64,32,16,8], 20 epochs
    "movielens-ncf": Hyperparameters(batch_size=256, learning_rate=1e-3, num_layers=4, epochs=20),
    # [KIL] keras-io bidirectional_lstm_imdb: batch 32, Adam (1e-3), 2 BiLSTM layers, 2 epochs
    "imdb-lstm": Hyperparameters(batch_size=32, learning_rate=1e-3, num_layers=2, epochs=2),
    # [KMC] keras-io mnist_convnet: batch 128, Adam (1e-3), 2 conv + 1 dense, 15 epochs
    "fashionmnist-cnn": Hyperparameters(
        batch_size=128, learning_rate=1e-3, num_layers=3, epochs=15
    ),
}
GROUNDED = tuple(RECIPES)
# Recipes whose learning rate lies below configs/constraints.toml's lr min (SPEC §3's
# default range [1e-4, 0.1]): their default is the nearest allowed value (each profile's
# header says so); every other grounded default is its recipe exactly.
BELOW_LR_MIN = ("squad-bert-large", "xsum-bart")
# mnist-lenet is the catalog's deliberately far-too-high learning-rate scenario
# (tests/sim/test_catalog.py requires one): batch, layers and epochs are [KMC]'s, its lr is not.
SCENARIO_LR = {
    "mnist-lenet": Hyperparameters(batch_size=128, learning_rate=1e-3, num_layers=5, epochs=15)
}
# Profiles with no verified recipe (their headers say what was searched): not grounded.
NOT_GROUNDED = ("adult-mlp", "higgs-mlp", "c4-t5", "wikitext103-gpt2")


def _goyal_hp(batch: int) -> Hyperparameters:
    """[G17]'s recipe at batch ``batch``: 90 epochs, linear scaling lr = 0.1 x B/256."""
    return Hyperparameters(
        batch_size=batch, learning_rate=0.1 * batch / 256, num_layers=50, epochs=90
    )


def goyal_relative_losses(p: WorkloadProfile) -> dict[int, float]:
    """Relative val loss vs B=256 at 90 epochs with linear lr scaling (memory not modelled)."""
    base = val_loss_curve(p, _goyal_hp(256), 90)
    out: dict[int, float] = {}
    for batch in (512, 1024, 2048, 4096, 8192, 16384, 32768):
        hp = _goyal_hp(batch)
        assert lr_ratio(p, hp) <= p.divergence_factor  # [G17] trained all of them
        out[batch] = val_loss_curve(p, hp, 90) / base - 1.0
    return out


def goyal_shape_holds(p: WorkloadProfile) -> bool:
    """[G17]: flat to 8k (<= 2 %), then rising: 16k and 32k inside the published ranges."""
    rel = goyal_relative_losses(p)
    flat = all(abs(rel[b]) <= GOYAL_FLAT_MAX for b in (512, 1024, 2048, 4096, 8192))
    rising = rel[8192] < rel[16384] < rel[32768]
    return (
        flat
        and rising
        and GOYAL_16K[0] <= rel[16384] <= GOYAL_16K[1]
        and GOYAL_32K[0] <= rel[32768] <= GOYAL_32K[1]
    )


def epochs_never_worse(p: WorkloadProfile, last: int, hp: Hyperparameters | None = None) -> bool:
    """More epochs never raise the val loss, from 1 to ``last`` epochs, at ``hp`` (defaults)."""
    at = p.defaults if hp is None else hp
    losses = [val_loss_curve(p, at, e) for e in range(1, last + 1)]
    return all(b <= a * (1.0 + 1e-12) for a, b in itertools.pairwise(losses))


def steps_to_result(p: WorkloadProfile, batch: int, target: float) -> float:
    """Steps to reach val loss ``target`` at batch ``batch`` and its best learning rate."""
    hp = replace(p.defaults, batch_size=batch, learning_rate=p.best_learning_rate(batch))
    lo, hi = 0.0, 1.0
    while val_loss_curve(p, hp, hi) > target:
        hi *= 2.0
        assert hi < 1e9, "target never reached"
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if val_loss_curve(p, hp, mid) > target:
            lo = mid
        else:
            hi = mid
    return hi * p.dataset_size / batch


def _scaling_gains(p: WorkloadProfile) -> dict[float, float]:
    """S(B)/S(2B) at B = b_noise x f, target 5 % above the defaults' converged loss."""
    best = replace(p.defaults, learning_rate=p.best_learning_rate(p.defaults.batch_size))
    target = 1.05 * val_loss_curve(p, best, 1e6)
    gains: dict[float, float] = {}
    for f in (1 / 64, 1 / 2, 8.0):
        b = max(1, round(p.b_noise * f))
        gains[f] = steps_to_result(p, b, target) / steps_to_result(p, 2 * b, target)
    return gains


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", GROUNDED)
def test_defaults_are_the_reference_recipe_and_inside_the_constraints(name):
    """Each grounded profile's defaults are its cited recipe (inside the constraints)."""
    p = load_profile(name)
    constraints = load_constraints()
    recipe = RECIPES[name]
    spec = constraints.params["learning_rate"]
    if name in BELOW_LR_MIN:
        # [D19]'s / [HFS]'s lr 5e-5 lies below the lr min 1e-4 (SPEC §3): the default is
        # the nearest allowed value, and the model's best lr stays the recipe's
        assert recipe.learning_rate < spec.min
        assert p.defaults == replace(recipe, learning_rate=spec.min)
        assert p.best_learning_rate(recipe.batch_size) == pytest.approx(recipe.learning_rate)
    else:
        assert p.defaults == recipe
    constraints.validate(p.defaults)


def test_the_scenario_and_ungrounded_profiles_are_named():
    """Every catalog profile is grounded, the named lr scenario, or named as not grounded."""
    from jpo.sim.response import load_catalog

    names = set(load_catalog())
    assert names == set(GROUNDED) | set(SCENARIO_LR) | set(NOT_GROUNDED)
    for name, recipe in SCENARIO_LR.items():
        p = load_profile(name)
        assert replace(p.defaults, learning_rate=recipe.learning_rate) == recipe
        assert p.defaults.learning_rate > 10 * p.best_learning_rate(p.defaults.batch_size)
    for name in NOT_GROUNDED:
        assert "NOT GROUNDED" in (WORKLOADS / f"{name}.toml").read_text()


# --------------------------------------------------------------------------- ungrounded

# Issue 30: "Where no measurement exists for a profile, say so in the file and keep its
# constants inside the range of the ones that have one." Every numeric constant of an
# ungrounded profile lies inside [min, max] of that constant over the GROUNDED profiles,
# except these, each for the reason its TOML header states under "OUTSIDE THE GROUNDED
# RANGE" (a size, a definition, a published LM fit or a cluster property; not a choice).
RANGE_SECTIONS = ("defaults", "limits", "memory", "compute", "optimization", "loss")
OUTSIDE_RANGE: dict[tuple[str, str], str] = {
    ("adult-mlp", "memory.params_fixed"): "a smaller network than any grounded one",
    ("higgs-mlp", "memory.params_fixed"): "28 input features, a 1-unit head",
    ("higgs-mlp", "compute.step_overhead_s"): "one jit-compiled call per step, data on device",
    ("c4-t5", "limits.gpu_memory_mib"): "the pod's GPU is an A100-80GB",
    ("c4-t5", "loss.initial_loss"): "ln(T5's vocabulary)",
    ("c4-t5", "loss.n_c"): "Kaplan et al. 2020's LM fit",
    ("c4-t5", "loss.alpha"): "Kaplan et al. 2020's LM fit",
    ("c4-t5", "loss.epochs_min"): "LM pre-training converges within one pass",
    ("c4-t5", "loss.overfit_rate"): "loss units: relative to its loss, inside the range",
    ("wikitext103-gpt2", "memory.activation_bytes_per_sample_per_layer"): "1,024-token samples",
    ("wikitext103-gpt2", "compute.gpu_s_per_sample_per_layer"): "1,024-token samples",
    ("wikitext103-gpt2", "loss.initial_loss"): "ln(GPT-2's vocabulary)",
    ("wikitext103-gpt2", "loss.n_c"): "Kaplan et al. 2020's LM fit",
    ("wikitext103-gpt2", "loss.alpha"): "Kaplan et al. 2020's LM fit",
    ("wikitext103-gpt2", "loss.overfit_rate"): "loss units: relative to its loss, inside the range",
}
LM_VOCABULARY = {"c4-t5": 32_128, "wikitext103-gpt2": 50_257}  # T5's and GPT-2's vocabularies
KAPLAN_LM_FIT = {"loss.n_c": 8.8e13, "loss.alpha": 0.076}  # Kaplan et al. 2020 eq. 1.1 (memory)


def numeric_constants(data: dict[str, dict[str, object]]) -> dict[str, float]:
    """Return a profile TOML's numeric constants as {"section.key": value}."""
    return {
        f"{section}.{key}": float(value)
        for section in RANGE_SECTIONS
        for key, value in data[section].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _toml(name: str) -> dict[str, dict[str, object]]:
    with (WORKLOADS / f"{name}.toml").open("rb") as fh:
        return tomllib.load(fh)


def grounded_ranges() -> dict[str, tuple[float, float]]:
    """Return [min, max] of each numeric constant over the grounded profiles."""
    values = [numeric_constants(_toml(n)) for n in GROUNDED]
    return {k: (min(v[k] for v in values), max(v[k] for v in values)) for k in values[0]}


def outside_range(data: dict[str, dict[str, object]]) -> set[str]:
    """Return the constants of a profile TOML outside the grounded profiles' range."""
    ranges = grounded_ranges()
    return {k for k, v in numeric_constants(data).items() if not ranges[k][0] <= v <= ranges[k][1]}


def _relative_overfit(name: str) -> float:
    """Return overfit_rate / the val loss at the defaults (the overfit rate in loss shares)."""
    p = load_profile(name)
    return p.overfit_rate / val_loss_curve(p, p.defaults, p.defaults.epochs)


@pytest.mark.parametrize("name", NOT_GROUNDED)
def test_ungrounded_constants_inside_the_grounded_range(name):
    """Issue 30: each ungrounded constant lies inside the grounded profiles' range, or is an
    explicit exception that its TOML header names and explains."""
    outside = outside_range(_toml(name))
    allowed = {key for (profile, key) in OUTSIDE_RANGE if profile == name}
    assert outside == allowed, (sorted(outside - allowed), sorted(allowed - outside))
    text = (WORKLOADS / f"{name}.toml").read_text()
    header = text.split("OUTSIDE THE GROUNDED RANGE", 1)[1].split("[workload]", 1)[0]
    for key in allowed:
        assert key.split(".", 1)[1] in header, f"{name}.toml does not explain {key}"


def test_the_range_exceptions_hold_their_stated_reasons():
    """The reasons of OUTSIDE_RANGE that are numbers: ln(vocabulary), Kaplan's fit, and an
    overfit rate inside the grounded profiles' range once relative to the profile's loss."""
    relative = [_relative_overfit(n) for n in GROUNDED]
    for (name, key), _reason in OUTSIDE_RANGE.items():
        value = numeric_constants(_toml(name))[key]
        if key == "loss.initial_loss":
            assert value == pytest.approx(math.log(LM_VOCABULARY[name]), rel=0.01)
        elif key in KAPLAN_LM_FIT:
            assert value == KAPLAN_LM_FIT[key]
        elif key == "loss.overfit_rate":
            assert min(relative) <= _relative_overfit(name) <= max(relative)


def test_the_range_check_fails_on_the_pre_range_constants():
    """Not vacuous: the constants issue 30 moved into the range are caught at their old values."""
    old = {
        "adult-mlp": {
            "memory.gpu_runtime_overhead_mib": 450,
            "memory.host_base_bytes": 1.288e9,
            "memory.params_per_layer": 66_000,
            "compute.step_overhead_s": 0.004,
            "compute.startup_s": 40,
            "optimization.divergence_factor": 30,
            "loss.n_c": 30,
            "loss.alpha": 0.4,
        },
        "higgs-mlp": {"memory.gpu_runtime_overhead_mib": 600, "optimization.divergence_factor": 25},
        "c4-t5": {"memory.gpu_runtime_overhead_mib": 2000},
    }
    for name, values in old.items():
        data = _toml(name)
        for key, value in values.items():
            section, field = key.split(".")
            data[section][field] = value
        assert set(values) <= outside_range(data), name


# --------------------------------------------------------------------------- ImageNet


def test_goyal_large_minibatch_table():
    """[G17] Table 1 / Fig. 1: flat to 8k at 90 epochs with linear lr scaling, then rising."""
    p = load_profile("imagenet-resnet50")
    rel = goyal_relative_losses(p)
    for batch in (512, 1024, 2048, 4096, 8192):
        assert abs(rel[batch]) <= GOYAL_FLAT_MAX, (batch, rel[batch])
    assert rel[8192] < rel[16384] < rel[32768]
    assert GOYAL_16K[0] <= rel[16384] <= GOYAL_16K[1], rel[16384]
    assert GOYAL_32K[0] <= rel[32768] <= GOYAL_32K[1], rel[32768]


def test_resnet50_epochs_lever_has_the_published_shape():
    """[H16]/[G17]: 90 epochs is the converged reference; 4 epochs is far from it."""
    p = load_profile("imagenet-resnet50")
    assert epochs_never_worse(p, 90)
    at = {e: val_loss_curve(p, p.defaults, e) for e in (4, 90)}
    assert at[4] > 1.5 * at[90]  # the case: 90 epochs must beat 4 clearly


def test_resnet50_depth_follows_torchvision():
    """[TV]: deeper ResNets lower the error; the model's loss moves by the same share (+-50 %)."""
    p = load_profile("imagenet-resnet50")
    base = val_loss_curve(p, p.defaults, 90)
    for depth in (101, 152):
        model = val_loss_curve(p, replace(p.defaults, num_layers=depth), 90) / base - 1.0
        published = TV_ERROR[depth] / TV_ERROR[50] - 1.0
        lo, hi = published * (1 + DEPTH_TOLERANCE), published * (1 - DEPTH_TOLERANCE)
        assert lo <= model <= hi, depth


def test_resnet50_throughput_and_memory_per_gpu():
    """[DLE] TF32: 938 img/s on one A100 (800..1,200); 256/GPU fits 40 GB, not 16."""
    p = load_profile("imagenet-resnet50")
    per_gpu_256 = replace(p.defaults, batch_size=256 * p.limits.gpus)
    s = predict(p, per_gpu_256, CLEAN)
    steady = s.throughput * s.duration_s / (s.duration_s - p.startup_s) / p.limits.gpus
    assert 800.0 <= steady <= 1200.0, steady
    assert 16 * GIB_MIB < p.gpu_memory_mib(per_gpu_256) <= p.limits.gpu_memory_mib
    # [DLE]'s V100-16GB FP32 recipe runs 112 per GPU: it fits 16 GB
    assert p.gpu_memory_mib(replace(p.defaults, batch_size=112 * p.limits.gpus)) <= 16 * GIB_MIB


# --------------------------------------------------------------------------- steps to result


@pytest.mark.parametrize("name", [n for n in GROUNDED if load_profile(n).overfit_rate == 0.0])
def test_steps_to_result_scale_then_diminish_then_stop(name):
    """[M18] eq. 2.11 / [S18] Fig. 1: doubling the batch halves the steps far below b_noise
    (S(B)/S(2B) >= 1.9), gains less near it (1.2..1.8), and nothing far above (<= 1.1)."""
    gains = _scaling_gains(load_profile(name))
    assert gains[1 / 64] >= 1.9, gains
    assert 1.2 <= gains[1 / 2] <= 1.8, gains
    assert gains[8.0] <= 1.1, gains


def test_critical_batches_inside_the_published_ranges():
    """[M18] Fig. 4: ImageNet's critical batch ~5k..50k, CIFAR-10's ~300..2,000 (read ranges)."""
    assert 5_000 <= load_profile("imagenet-resnet50").b_noise <= 50_000
    assert 5_000 <= load_profile("imagenet-efficientnet").b_noise <= 50_000
    assert 300 <= load_profile("cifar10-resnet18").b_noise <= 2_000


def test_efficientnet_epochs_lever():
    """[TL19]: 350 epochs is the recipe: more epochs never worse up to it; 3 far from it."""
    p = load_profile("imagenet-efficientnet")
    assert epochs_never_worse(p, 350)
    assert val_loss_curve(p, p.defaults, 3) > 1.5 * val_loss_curve(p, p.defaults, 350)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_epochs_lever():
    """[KL]: 200 epochs is the recipe; short (~30 epoch) recipes land within +5..+30 % loss."""
    p = load_profile("cifar10-resnet18")
    assert epochs_never_worse(p, 200)
    ratio = val_loss_curve(p, p.defaults, 30) / val_loss_curve(p, p.defaults, 200)
    assert 1.05 <= ratio <= 1.30, ratio


# --------------------------------------------------------------------------- SQuAD


def test_squad_recipe_memory_and_epochs():
    """[D19]'s batch 32 OOMs one A100-40GB (AMP); [GB]'s 24 and 16 fit; 3 epochs beat 2."""
    p = load_profile("squad-bert-large")
    assert predict(p, p.defaults, CLEAN).failure == "oom"
    for batch in (24, 16):
        assert predict(p, replace(p.defaults, batch_size=batch), CLEAN).failure == "none"
    one, two = (p.gpu_memory_mib(replace(p.defaults, batch_size=b)) for b in (1, 2))
    per_sample_gb = (two - one) / GIB_MIB
    assert 1.0 <= per_sample_gb <= 1.5, per_sample_gb  # [HF] FP32 2..3 GB per sample, halved
    assert epochs_never_worse(p, 3)


def test_squad_throughput_inside_the_derived_range():
    """[K20] 6N FLOPs per token at 40..50 % of A100 FP16 peak: 100..200 samples/s (derived)."""
    p = load_profile("squad-bert-large")
    hp = replace(p.defaults, batch_size=24)
    s = predict(p, hp, CLEAN)
    steady = s.throughput * s.duration_s / (s.duration_s - p.startup_s)
    assert 100.0 <= steady <= 200.0, steady


# --------------------------------------------------------------------------- recipes' epochs

# (profile, the pre-issue-30 default epochs): the recipes train far longer than the old
# defaults did; where the old default was a small fraction of the recipe, it must be clearly
# worse than the recipe (the ResNet-50 case: 4 epochs vs 90).
SHORT_OLD_DEFAULTS = {"coco-yolov5": 3, "kinetics-x3d": 3, "librispeech-conformer": 4}


@pytest.mark.parametrize("name", [n for n in GROUNDED if n != "squad-bert-large"])
def test_more_epochs_never_worse_within_the_recipe(name):
    """Each recipe: more epochs never raise the val loss, up to the recipe's epochs (at its lr)."""
    p = load_profile(name)
    recipe = RECIPES[name]
    assert epochs_never_worse(p, recipe.epochs, recipe)
    if name in SHORT_OLD_DEFAULTS:
        short = val_loss_curve(p, recipe, SHORT_OLD_DEFAULTS[name])
        assert short > 1.5 * val_loss_curve(p, recipe, recipe.epochs)


# --------------------------------------------------------------------------- other recipes

# [MMS] DeepLabV3 R-101-D8 512x1024: 40k iterations (108 epochs) 77.12 mIoU, 80k (215) 80.20;
# read as val loss by (100 - mIoU): 22.88 / 19.80 - 1 = +15.6 %, tolerance +-50 %.
MMS_40K_VS_80K = (100 - 77.12) / (100 - 80.20) - 1.0
MMS_MEMORY_GB = 9.6  # per GPU at 2 images; tolerance +-25 %
EPOCH_TOLERANCE = 0.5


def test_deeplabv3_40k_vs_80k_and_memory():
    """[MMS]: half the recipe (40k iterations) is +15.6 % loss (+-50 %); 9.6 GB per GPU (+-25 %)."""
    p = load_profile("cityscapes-deeplabv3")
    half = val_loss_curve(p, p.defaults, 108) / val_loss_curve(p, p.defaults, 215) - 1.0
    lo, hi = MMS_40K_VS_80K * (1 - EPOCH_TOLERANCE), MMS_40K_VS_80K * (1 + EPOCH_TOLERANCE)
    assert lo <= half <= hi, half
    per_gpu_gb = p.gpu_memory_mib(p.defaults) / GIB_MIB
    assert 0.75 * MMS_MEMORY_GB <= per_gpu_gb <= 1.25 * MMS_MEMORY_GB, per_gpu_gb


# [U5R]: 2 days for 300 epochs x 118,287 images on one V100: ~205 img/s (derived, coarse);
# the A10G has no published figure and is assumed comparable: range 140..300 img/s.
YOLO_IMG_S = (140.0, 300.0)


def test_yolov5_batch_fits_16gb_and_throughput():
    """[U5R]: batch 64 is the 16 GB-device batch; ~205 img/s derived from its training time."""
    p = load_profile("coco-yolov5")
    assert p.gpu_memory_mib(p.defaults) <= 16 * GIB_MIB
    s = predict(p, p.defaults, CLEAN)
    steady = s.throughput * s.duration_s / (s.duration_s - p.startup_s)
    assert YOLO_IMG_S[0] <= steady <= YOLO_IMG_S[1], steady


# [HFS]: bart-base on xsum, 6 epochs, batch 64, lr 5e-5: validation loss 1.7785; +-10 %.
HFS_VAL_LOSS = 1.7785
HFS_TOLERANCE = 0.10


def test_bart_xsum_validation_loss():
    """[HFS]: the recipe's validation loss after 6 epochs is 1.7785 (the model within +-10 %)."""
    p = load_profile("xsum-bart")
    loss = val_loss_curve(p, RECIPES["xsum-bart"], 6)
    assert abs(loss / HFS_VAL_LOSS - 1.0) <= HFS_TOLERANCE, loss


# [DLE] NCF on ML-20M, one V100 16GB, FP32: 10.42M samples/s at batch 1,048,576; +-30 %.
DLE_NCF_SAMPLES_S = 10.42e6
DLE_NCF_BATCH = 1_048_576


def test_ncf_throughput_at_the_dle_batch():
    """[DLE]: batch 2^20 fits one V100 16GB and trains at 10.42M samples/s (the model +-30 %)."""
    p = load_profile("movielens-ncf")
    hp = replace(p.defaults, batch_size=DLE_NCF_BATCH)  # above JPO's batch max: model only
    assert p.gpu_memory_mib(hp) <= p.limits.gpu_memory_mib
    s = predict(p, replace(hp, learning_rate=p.best_learning_rate(DLE_NCF_BATCH)), CLEAN)
    steady = s.throughput * s.duration_s / (s.duration_s - p.startup_s)
    assert 0.7 * DLE_NCF_SAMPLES_S <= steady <= 1.3 * DLE_NCF_SAMPLES_S, steady


# --------------------------------------------------------------------------- sensitivity


def test_the_checks_fail_on_the_pre_grounding_calibration():
    """The checks are not vacuous: imagenet-resnet50's old constants (epochs_min 2.6,
    b_noise 8,000, lr_noise_penalty 0.2, overfit 0.005/epoch, default 4 epochs) fail them."""
    p = load_profile("imagenet-resnet50")
    assert goyal_shape_holds(p) and epochs_never_worse(p, 90)
    old = replace(p, epochs_min=2.6, b_noise=8000.0, lr_noise_penalty=0.2, overfit_rate=0.005)
    assert not goyal_shape_holds(old)
    assert not epochs_never_worse(old, 90)
    # one constant at a time is enough to break the Goyal shape
    assert not goyal_shape_holds(replace(p, b_noise=p.b_noise / 2))
    assert not goyal_shape_holds(replace(p, lr_noise_penalty=5 * p.lr_noise_penalty))
    assert math.isfinite(val_loss_curve(old, old.defaults, 4))


def test_the_new_checks_fail_on_the_pre_grounding_constants():
    """The recipe checks are not vacuous: the pre-issue-30 constants fail them."""
    yolo = load_profile("coco-yolov5")
    old_yolo = replace(yolo, epochs_min=1.5, overfit_rate=0.01)
    assert not epochs_never_worse(old_yolo, 300, RECIPES["coco-yolov5"])
    old_yolo_mem = replace(yolo, activation_bytes_per_sample_per_layer=16e6)
    assert old_yolo_mem.gpu_memory_mib(yolo.defaults) > 16 * GIB_MIB
    city = load_profile("cityscapes-deeplabv3")
    old_city = replace(city, epochs_min=65.0, overfit_rate=0.0002)
    half = val_loss_curve(old_city, city.defaults, 108) / val_loss_curve(
        old_city, city.defaults, 215
    )
    assert half - 1.0 < MMS_40K_VS_80K * (1 - EPOCH_TOLERANCE)  # +1.6 %: overfitting
    bart = load_profile("xsum-bart")
    old_bart = replace(bart, epochs_min=3.0)
    assert not epochs_never_worse(old_bart, 6, RECIPES["xsum-bart"])
    ncf = load_profile("movielens-ncf")
    old_ncf = replace(ncf, gpu_s_per_sample_fixed=6e-7, gpu_s_per_sample_per_layer=3e-7)
    s = predict(old_ncf, replace(ncf.defaults, batch_size=DLE_NCF_BATCH), CLEAN)
    assert s.failure == "none" and s.throughput < 0.7 * DLE_NCF_SAMPLES_S
