"""Registry-wide model tests: every registered model (and every shipped config) is covered
automatically. Models are built with their own (BARS) defaults on a tiny feature map: one
task for single-task models, a click/conversion funnel for multi-task models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adrank.config import RunConfig, TrainConfig
from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo, TaskInfo
from adrank.models import CTRModel, ModelOutput, available_models, build_model, get_model_class
from adrank.models.multitask import MultiTaskModel
from adrank.models.sequence_base import SequenceModel
from adrank.tasks import model_outputs, resolve_objectives
from adrank.train.losses import task_loss, training_loss

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs" / "models"
CONFIG_DIR = CONFIG_ROOT / "frappe"
#: click/conversion datasets: their task names (click task, conversion task given click)
FUNNEL_DATASETS = {"frappe_funnel": ("click", "engaged"), "movielens_100k": ("like", "love")}
FRAPPE_CARDINALITIES = {
    "user": 957,
    "item": 4082,
    "daytime": 7,
    "weekday": 7,
    "isweekend": 2,
    "homework": 3,
    "cost": 2,
    "weather": 9,
    "country": 80,
    "city": 233,
}
MODELS = available_models()
BATCH = 64
#: behaviour-sequence models: built on a feature map with a history (and its target)
SEQUENCE_MODELS = ["din", "dien", "bst", "dmin", "sim", "eta", "sdim", "twin", "qin", "daca"]
HISTORY_LEN = 5
#: every tiny feature map declares ``c0`` (frappe: ``homework``) as the domain role, so the
#: multi-domain models (STAR, PEPNet) build on it; the other models ignore it
TINY_ROLES = {"domain": RoleInfo("domain", "__domain__", "vocab", "c0", ("a", "b", "c"))}
FRAPPE_ROLES = {
    "domain": RoleInfo("domain", "__domain__", "vocab", "homework", ("unknown", "home", "work"))
}


def funnel_tasks(click: str = "click", conversion: str = "conversion") -> dict:
    """FeatureMap keywords for a click task (pctr) and a conversion task given it (pcvr)."""
    return {
        "labels": (click, conversion),
        "tasks": (
            TaskInfo(click, click, output="pctr"),
            TaskInfo(conversion, conversion, given=click, output="pcvr"),
        ),
    }


def is_multitask(name: str) -> bool:
    return issubclass(get_model_class(name), MultiTaskModel)


def is_sequence(name: str) -> bool:
    return issubclass(get_model_class(name), SequenceModel)


def history_fields(item: str, attribute: str, max_len: int = HISTORY_LEN) -> list[FieldInfo]:
    """A history of ``item`` ids (its target) with the items' ``attribute`` aligned."""
    return [
        FieldInfo(f"hist_{item}", "sequence", max_len=max_len, embedding_group=item, target=item),
        FieldInfo(
            f"hist_{attribute}",
            "sequence",
            max_len=max_len,
            embedding_group=attribute,
            aligned_with=f"hist_{item}",
        ),
    ]


def tiny_feature_map(
    with_numeric: bool, multitask: bool = False, sequence: bool = False
) -> FeatureMap:
    """user/item plus two more categorical fields, and optionally one numeric field and
    (``sequence``) an item history with the aligned ``c0`` of each item; one task
    ``click``, or with ``multitask`` a click/conversion funnel."""
    fields = [
        FieldInfo("user", "categorical", vocab_size=12),
        FieldInfo("item", "categorical", vocab_size=9),
        FieldInfo("c0", "categorical", vocab_size=5),
        FieldInfo("c1", "categorical", vocab_size=7),
    ]
    if with_numeric:
        fields.append(FieldInfo("n0", "numeric"))
    if sequence:
        fields.extend(history_fields("item", "c0"))
    if multitask:
        return FeatureMap(tuple(fields), **funnel_tasks(), roles=TINY_ROLES)
    return FeatureMap(tuple(fields), labels=("click",), roles=TINY_ROLES)


def model_feature_map(name: str, with_numeric: bool) -> FeatureMap:
    return tiny_feature_map(with_numeric, multitask=is_multitask(name), sequence=is_sequence(name))


def frappe_feature_map(tasks: tuple[str, str] | None = None, sequence: bool = False) -> FeatureMap:
    """Frappe's 10 categorical fields; vocab = cardinality + padding + OOV (5,402 rows);
    one task, or the funnel ``tasks`` (click, conversion); with ``sequence`` an item
    history of 50 with each item's ``city`` aligned (the shape of MovieLens' histories)."""
    fields = tuple(
        FieldInfo(name, "categorical", vocab_size=card + 2)
        for name, card in FRAPPE_CARDINALITIES.items()
    )
    if sequence:
        fields = (*fields, *history_fields("item", "city", max_len=50))
    if tasks is not None:
        return FeatureMap(fields, **funnel_tasks(*tasks), roles=FRAPPE_ROLES)
    return FeatureMap(fields, labels=("click",), roles=FRAPPE_ROLES)


def random_features(fmap: FeatureMap, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random ids (real ids start at 2) and N(0, 1) numbers; histories are left-padded to
    random lengths (some empty), with their aligned attributes padded alike."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    lengths: dict[str, torch.Tensor] = {}
    for f in fmap.fields:
        if f.kind == "numeric":
            out[f.name] = torch.randn(batch, generator=gen)
        elif f.kind == "categorical":
            out[f.name] = torch.randint(2, f.vocab_size, (batch,), generator=gen)
        else:
            vocab = fmap.field(f.table).vocab_size
            owner = f.aligned_with or f.name
            if owner not in lengths:
                lengths[owner] = torch.randint(0, f.max_len + 1, (batch, 1), generator=gen)
            real = torch.arange(f.max_len) >= f.max_len - lengths[owner]  # (B, L), left pad
            ids = torch.randint(2, vocab, (batch, f.max_len), generator=gen)
            out[f.name] = ids * real
    return out


def learnable_batch(fmap: FeatureMap) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A fixed batch whose labels (B, T) are functions of the ids (so every model can fit
    them): click = even user; conversion (a funnel's second label) = click and even item."""
    features = random_features(fmap, BATCH, seed=7)
    click = (features["user"] % 2 == 0).float()
    if len(fmap.labels) == 1:
        return features, click[:, None]
    return features, torch.stack([click, click * (features["item"] % 2 == 0).float()], dim=1)


def total_loss(model: CTRModel, features: dict[str, torch.Tensor], labels: torch.Tensor):
    """The trainer's objective (the tasks' losses + the model's auxiliary loss)."""
    outputs = model.training_outputs(features)
    assert isinstance(outputs, ModelOutput)
    return training_loss(model, outputs, Batch(features, labels), TrainConfig())


def tasks_loss(model: CTRModel, features: dict[str, torch.Tensor], labels: torch.Tensor):
    """The tasks' losses of the plain forward (no auxiliary loss)."""
    fmap = model.feature_map
    outputs = model_outputs(model, fmap, None)
    objectives = resolve_objectives(model, fmap)
    return task_loss(model(features), outputs, objectives, Batch(features, labels))


def output_shape(model: CTRModel, batch: int) -> tuple[int, ...]:
    return (batch,) if model.outputs is None else (batch, len(model.outputs))


def build(name: str, fmap: FeatureMap, seed: int = 0) -> CTRModel:
    torch.manual_seed(seed)
    return build_model(name, fmap)


@pytest.mark.parametrize("with_numeric", [False, True], ids=["categorical", "mixed"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_loss_and_gradients(name: str, with_numeric: bool) -> None:
    fmap = model_feature_map(name, with_numeric)
    model = build(name, fmap)
    features, labels = learnable_batch(fmap)
    logits = model(features)
    assert logits.shape == output_shape(model, BATCH)
    assert torch.isfinite(logits).all()

    loss = total_loss(model, features, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {pname}"
    embeddings = model.embedding_modules()
    assert embeddings, f"{name} has no FeatureEmbedding"
    grads = [p.grad for e in embeddings for p in e.parameters() if p.grad is not None]
    assert grads, f"no gradient reaches the embeddings of {name}"
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", MODELS)
def test_training_lowers_loss(name: str) -> None:
    fmap = model_feature_map(name, with_numeric=True)
    model = build(name, fmap)
    features, labels = learnable_batch(fmap)

    def train_mode_loss() -> float:
        # Same dropout masks before and after training: only the weights differ. (Eval mode
        # is not used because BatchNorm-after-dropout shifts variance on a 64-row batch.)
        model.train()
        torch.manual_seed(123)
        with torch.no_grad():
            return float(tasks_loss(model, features, labels))

    before = train_mode_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        total_loss(model, features, labels).backward()
        optimizer.step()
    after = train_mode_loss()
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name: str, tmp_path: Path) -> None:
    fmap = model_feature_map(name, with_numeric=True)
    model = build(name, fmap, seed=0)
    features, labels = learnable_batch(fmap)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # move weights and BatchNorm statistics away from their init
        optimizer.zero_grad()
        total_loss(model, features, labels).backward()
        optimizer.step()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)

    fresh = build(name, fmap, seed=1)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(features), fresh(features))


@pytest.mark.parametrize("name", MODELS)
def test_build_model_rejects_unknown_hyperparameter(name: str) -> None:
    with pytest.raises(ValueError, match="not_a_hyperparameter"):
        build_model(name, tiny_feature_map(False), not_a_hyperparameter=1)


def test_dcnv3_tri_bce_matches_formula() -> None:
    fmap = tiny_feature_map(with_numeric=False)
    model = build("dcnv3", fmap)
    features, labels = learnable_batch(fmap)
    labels = labels[:, 0]
    model.eval()
    with torch.no_grad():
        out = model.training_outputs(features)
        assert set(out.aux) == {"lcn_logit", "ecn_logit"}
        torch.testing.assert_close(out.logits, 0.5 * (out.aux["lcn_logit"] + out.aux["ecn_logit"]))
        torch.testing.assert_close(model(features), out.logits)
        main = F.binary_cross_entropy_with_logits(out.logits, labels)
        expected = sum(
            max(0.0, float(sub - main)) * sub
            for sub in (
                F.binary_cross_entropy_with_logits(out.aux[k], labels)
                for k in ("lcn_logit", "ecn_logit")
            )
        )
        torch.testing.assert_close(model.auxiliary_loss(out, labels), torch.as_tensor(expected))


@pytest.mark.parametrize("detach", [False, True])
def test_dcnv3_tri_bce_weight_gradient(detach: bool) -> None:
    """Same loss value either way; only the un-detached weights pass gradient to the mean
    logit (the authors' code), the detached ones treat w_s, w_d as constants."""
    model = build_model("dcnv3", tiny_feature_map(False), detach_loss_weights=detach)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.tensor([2.0, -2.0, 1.5, -1.0], requires_grad=True)
    # sub-network logits far worse than the mean logit, so both weights are positive
    lcn = torch.tensor([-1.0, 1.0, -0.5, 0.5], requires_grad=True)
    ecn = torch.tensor([0.0, 0.5, -1.0, 1.0], requires_grad=True)
    out = ModelOutput(logits, aux={"lcn_logit": lcn, "ecn_logit": ecn})
    loss = model.auxiliary_loss(out, labels)
    main = F.binary_cross_entropy_with_logits(logits, labels)
    subs = [F.binary_cross_entropy_with_logits(x, labels) for x in (lcn, ecn)]
    torch.testing.assert_close(loss, sum((s - main) * s for s in subs))
    loss.backward()
    assert lcn.grad is not None and lcn.grad.abs().sum() > 0
    if detach:
        assert logits.grad is None or torch.all(logits.grad == 0)
    else:
        assert logits.grad is not None and logits.grad.abs().sum() > 0


VARIANTS = [
    ("dcn", {"dnn_hidden_units": []}),
    ("dcnv2", {"model_structure": "crossnet_only"}),
    ("dcnv2", {"model_structure": "stacked", "stacked_dnn_hidden_units": [16]}),
    ("dcnv2", {"model_structure": "stacked_parallel", "use_low_rank_mixture": True}),
    ("dcnv3", {"num_heads": 2, "batch_norm": False, "layer_norm": False}),
    ("dlrm", {"interaction_op": "dot", "bottom_mlp_units": [8]}),
    ("edcn", {"bridge_type": "pointwise_addition", "use_regulation_module": False}),
    ("edcn", {"bridge_type": "concatenation", "batch_norm": False}),
    ("edcn", {"bridge_type": "attention_pooling"}),
    ("xdeepfm", {"dnn_hidden_units": [], "cin_layer_units": [4, 3]}),
    ("sharebottom", {"conversion_target": "pctcvr", "batch_norm": False}),
    ("mmoe", {"conversion_target": "pctcvr", "num_experts": 1}),
    ("ple", {"num_levels": 1}),
    ("ple", {"num_levels": 3, "num_specific_experts": 2, "conversion_target": "pctcvr"}),
    ("aitm", {"calibrator_weight": 0.0, "tower_hidden_units": [8]}),
]


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=lambda v: str(v))
def test_structural_variants(name: str, params: dict) -> None:
    fmap = model_feature_map(name, with_numeric=True)
    torch.manual_seed(0)
    model = build_model(name, fmap, **params)
    features, labels = learnable_batch(fmap)
    loss = total_loss(model, features, labels)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        assert model(features).shape == output_shape(model, BATCH)


def test_invalid_choices_are_rejected() -> None:
    for name, params, match in [
        ("dcnv2", {"model_structure": "diagonal"}, "model_structure"),
        ("dlrm", {"interaction_op": "sum"}, "interaction_op"),
        ("edcn", {"bridge_type": "gated"}, "bridge_type"),
        ("mmoe", {"conversion_target": "pconv"}, "conversion_target"),
        ("ple", {"num_levels": 0}, "num_levels"),
        ("ple", {"num_shared_experts": 0}, "num_shared_experts"),
        ("aitm", {"calibrator_weight": -1.0}, "calibrator_weight"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_model(name, model_feature_map(name, with_numeric=False), **params)


CONFIGS = sorted(CONFIG_ROOT.glob("*/*.yaml"))
MULTITASK_MODELS = ["sharebottom", "esmm", "mmoe", "ple", "aitm"]


def test_configs_exist() -> None:
    assert sorted(CONFIG_DIR.glob("*.yaml")), f"no configs found under {CONFIG_DIR}"
    for dataset in FUNNEL_DATASETS:  # every multi-task model and the two baselines
        names = {p.stem for p in (CONFIG_ROOT / dataset).glob("*.yaml")}
        sequence = SEQUENCE_MODELS if dataset == "movielens_100k" else []
        assert names == {*MULTITASK_MODELS, "dnn", "deepfm", *sequence}, dataset


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_builds(path: Path) -> None:
    config = RunConfig.load(path)
    dataset = path.parent.name
    assert config.model == path.stem and config.dataset == dataset
    assert config.model in MODELS
    assert config.train.batch_size == 4096 and config.train.learning_rate == 1e-3
    fmap = frappe_feature_map(FUNNEL_DATASETS.get(dataset), sequence=is_sequence(config.model))
    torch.manual_seed(0)
    model = build_model(config.model, fmap, **config.params)
    assert model.num_parameters() > 0
    model.eval()
    with torch.no_grad():
        logits = model(random_features(fmap, 8, seed=0))
    assert logits.shape == output_shape(model, 8) and torch.isfinite(logits).all()


@pytest.mark.parametrize("dataset", sorted(FUNNEL_DATASETS))
def test_funnel_configs_share_the_protocol(dataset: str) -> None:
    """Multi-task models and baselines: one embedding dim, BARS patience; multi-task runs
    monitor named metrics of this dataset's tasks."""
    click, _ = FUNNEL_DATASETS[dataset]
    configs = [RunConfig.load(p) for p in sorted((CONFIG_ROOT / dataset).glob("*.yaml"))]
    assert {c.params.get("embedding_dim") for c in configs} == {10}
    assert {c.train.patience for c in configs} == {2}
    for c in configs:
        if c.model in MULTITASK_MODELS:
            assert c.train.monitor == {f"{click}_auc": 0.5, "pctcvr_auc": 0.5}, c.model
        elif c.model in SEQUENCE_MODELS:  # single-task, on the click task (din@like)
            assert c.train.task == click and c.train.monitor == "auc", c.model
        else:  # a baseline is told its task (--set task=...) by the benchmark
            assert c.train.task is None and c.train.monitor == "auc", c.model


def test_sequence_models_are_registered() -> None:
    assert sorted(n for n in MODELS if is_sequence(n)) == sorted(SEQUENCE_MODELS)
