"""The learned pseudo-healthy synthesis: geometry, samples, networks, losses, training, model
files and the synthesis reference, on phantoms whose true heights are known.

The training test trains the ``tiny`` configuration for about a minute; the module's fixtures
share that model, so the whole file runs in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
#: the learned synthesis trains generators (minutes in all): the slow tier
pytestmark = pytest.mark.slow
pytest.importorskip("safetensors")

from vertgrade.errors import InputError, ModelFileError, OutputError  # noqa: E402
from vertgrade.pipeline import grade_study  # noqa: E402
from vertgrade.reference.base import ReferenceEstimator  # noqa: E402
from vertgrade.result import SCHEMA_VERSION  # noqa: E402
from vertgrade.synthesis.config import SynthesisConfig, config_from_dict, named_config  # noqa: E402
from vertgrade.synthesis.crops import StraightenedSpine  # noqa: E402
from vertgrade.synthesis.data import (  # noqa: E402
    SliceDataset,
    band_scale,
    build_samples,
    load_samples,
    make_slices,
    slice_positions,
)
from vertgrade.synthesis.infer import Synthesiser  # noqa: E402
from vertgrade.synthesis.losses import TrainingTargets, generator_losses  # noqa: E402
from vertgrade.synthesis.model import (  # noqa: E402
    Generator,
    build_discriminators,
    compose,
    contextual_attention,
    count_parameters,
    resolve_device,
)
from vertgrade.synthesis.modelfile import (  # noqa: E402
    load_generator,
    read_model_file,
    save_generator,
)
from vertgrade.synthesis.phantoms import phantom_subject  # noqa: E402
from vertgrade.synthesis.reference import SynthesisReference  # noqa: E402
from vertgrade.synthesis.train import batch_tensors, train_synthesis  # noqa: E402

#: the test model: the tiny configuration, trained a little more briskly
TEST_CONFIG = replace(named_config("tiny"), lr=2e-3, batch_size=12, seed=3)
TRAIN_SUBJECTS = 6
TRAIN_EPOCHS = 12


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_spines() -> list[StraightenedSpine]:
    return [phantom_subject(i, seed=1).spine for i in range(TRAIN_SUBJECTS)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, train_spines: list[StraightenedSpine]):
    out = tmp_path_factory.mktemp("model")
    summary = train_synthesis(train_spines, out, config=TEST_CONFIG, epochs=TRAIN_EPOCHS)
    return summary


@pytest.fixture(scope="module")
def synthesiser(trained) -> Synthesiser:
    return Synthesiser.from_file(trained.model_path)


@pytest.fixture(scope="module")
def fractured():
    """Held-out subjects (another cohort seed) with known fractures."""
    return [
        phantom_subject(0, seed=7, fractures=["T12:wedge:0.4"]),
        phantom_subject(1, seed=7, fractures=["L1:crush:0.35"]),
    ]


class _Recording(SynthesisReference):
    """The synthesis reference, keeping what grade_study handed it (for the tests to reuse)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.calls: list = []

    def estimate(self, vertebrae, context=None):  # type: ignore[no-untyped-def]
        self.calls.append((list(vertebrae), context))
        return super().estimate(vertebrae, context)


@pytest.fixture(scope="module")
def graded(synthesiser, fractured):
    """Each held-out subject graded with the synthesis reference: (subject, reference, result)."""
    out = []
    for subj in fractured:
        ref = _Recording(synthesiser)
        out.append((subj, ref, grade_study(subj.study, reference=ref)))
    return out


def _batch(spines: list[StraightenedSpine], cfg: SynthesisConfig, n: int = 4):
    ds = SliceDataset(spines, cfg)
    idx = np.linspace(0, len(ds) - 1, n).astype(int)
    return batch_tensors(ds.batch(idx), torch.device("cpu"))


# --- configuration --------------------------------------------------------------------------


def test_configs_round_trip_and_paper_size() -> None:
    for name in ("tiny", "paper"):
        cfg = named_config(name)
        assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = named_config("paper")
    assert paper.losses.edge == 800 and paper.losses.height == 40 and paper.band_mm == 40
    assert paper.window_hu == (-300.0, 800.0) and paper.lr == 2e-4 and paper.betas == (0.5, 0.999)
    n = count_parameters(Generator(paper))
    assert 0.85e6 < n < 1.1e6  # "about 1.0 M" (903,734)
    with pytest.raises(ValueError, match="multiple of 8"):
        replace(paper, image_width_mm=60.0)
    with pytest.raises(ValueError, match="unknown configuration keys"):
        config_from_dict({"nope": 1})


# --- geometry ---------------------------------------------------------------------------------


def test_straightening_is_invertible_and_follows_the_frames(train_spines) -> None:
    sp = train_spines[0]
    rng = np.random.default_rng(0)
    r = rng.integers(20, sp.t_mm.size - 20, 200)
    a = rng.uniform(-30, 30, 200)
    b = rng.uniform(-30, 30, 200)
    world = sp.to_world(sp.t_mm[r], a, b)
    back = sp.from_world(world)
    np.testing.assert_allclose(back, np.stack([sp.t_mm[r], a, b], 1), atol=1e-3)
    # at a vertebra's arc position the row is exactly its frame
    subj = phantom_subject(0, seed=1)
    core = grade_study(subj.study)
    for v in core.vertebrae:
        t = sp.vertebrae[v.label].t_centre_mm
        o = sp.to_world(np.array([t]), np.zeros(1), np.zeros(1))[0]
        np.testing.assert_allclose(o, v.frame.origin, atol=0.05)


def test_straightened_body_maps_back_onto_the_original(train_spines) -> None:
    """The transform is exact: the straightened body mask, resampled back onto the CT grid,
    is the original body (the mapping used for synthesised bodies)."""
    subj = phantom_subject(0, seed=1)
    sp = subj.spine
    core = grade_study(subj.study)
    label = 19
    ext = sp.vertebrae[label]
    r0 = int(np.searchsorted(sp.t_mm, ext.t_top_mm - 6))
    r1 = int(np.searchsorted(sp.t_mm, ext.t_bottom_mm + 6))
    vals = (sp.body[r0:r1] / 255.0) * (sp.owner[r0:r1] == label)
    back = sp.to_grid(
        vals, sp.t_mm[r0:r1], sp.ap_mm, sp.lr_mm, subj.study.labels.shape, subj.study.labels.affine
    )
    orig = core.bodies == label
    mine = back >= 0.5
    dice = 2 * (orig & mine).sum() / (orig.sum() + mine.sum())
    assert dice > 0.9


# --- samples ----------------------------------------------------------------------------------


def test_band_is_the_same_for_every_target_and_tall_targets_shrink(train_spines) -> None:
    cfg = TEST_CONFIG
    sp = train_spines[0]
    rows = None
    for label in (18, 19, 20):
        b = make_slices(sp, label, "sagittal", [0.0], cfg, with_truth=True)
        empty = np.flatnonzero((b.image[0] == 0).all(axis=1))
        rows = empty if rows is None else rows
        np.testing.assert_array_equal(empty, rows)  # same band, whatever the target's height
        assert len(empty) == round(cfg.band_rows)
        # the centred truth holds the whole target, of its measured height
        seg = b.target_seg[0]
        prof = seg.max(axis=1)
        h_px = (prof >= 0.5).sum()
        assert abs(h_px - b.height_px[0]) <= 2.5
    # a band shorter than the target: the sample shrinks, in training and inference alike
    short = replace(cfg, band_mm=16.0)
    ext = sp.vertebrae[19]
    s = band_scale(ext.height_mm, short)
    assert s < 1 and s == pytest.approx(0.9 * 16.0 / ext.height_mm)
    b = make_slices(sp, 19, "sagittal", [0.0], short, with_truth=True)
    assert b.scale[0] == pytest.approx(s)
    assert b.height_px[0] * short.spacing_mm <= 0.9 * short.band_mm + 1e-6


def test_compose_with_the_true_height_reproduces_the_truth(train_spines) -> None:
    inputs, t = _batch(train_spines, TEST_CONFIG, 8)
    real = compose(t.truth, inputs["image"], t.height, TEST_CONFIG.band_rows)
    diff = (real - t.truth).abs()[:, 0, 6:-6]  # the outermost rows come from beyond the image
    assert float(diff.mean()) < 0.01


def test_contextual_attention_uses_each_samples_own_mask() -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 8, 16, 8)
    holes = torch.zeros(2, 1, 16, 8)
    holes[0, :, 4:8] = 1
    holes[1, :, 8:14] = 1
    both = contextual_attention(f, holes)
    for i in range(2):
        alone = contextual_attention(f[i : i + 1], holes[i : i + 1])
        torch.testing.assert_close(both[i : i + 1], alone)
    swapped = contextual_attention(f, holes.flip(0))
    assert not torch.allclose(both[0], swapped[0])


# --- losses -----------------------------------------------------------------------------------


def test_every_generator_loss_term_has_gradient(train_spines) -> None:
    cfg = TEST_CONFIG
    torch.manual_seed(0)
    gen = Generator(cfg).train()
    discs = build_discriminators(cfg).train()
    inputs, t = _batch(train_spines, cfg, 4)
    out = gen(**inputs, true_height=t.height)
    terms = generator_losses(out, t, discs, cfg)
    params = [p for p in gen.parameters() if p.requires_grad]
    fine_params = list(gen.fine.parameters())
    for name, value in terms.items():
        if name == "total":
            continue
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        norm = sum(float(g.abs().sum()) for g in grads if g is not None)
        assert norm > 0, name
    # EEM and the segmentation discriminator reach the fine stage (the soft segmentation)
    for name in ("edge", "adversarial_segmentation", "dice_target"):
        grads = torch.autograd.grad(terms[name], fine_params, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name


# --- training, model files ----------------------------------------------------------------------


def test_training_loss_falls(trained) -> None:
    h = trained.history
    assert trained.epochs_done == TRAIN_EPOCHS and len(h) == TRAIN_EPOCHS
    assert h[-1]["g_total"] < 0.8 * h[0]["g_total"]
    assert h[-1]["g_dice_target"] < h[0]["g_dice_target"]
    assert trained.parameters == count_parameters(Generator(TEST_CONFIG))
    mf = read_model_file(trained.model_path)
    assert mf.config == TEST_CONFIG.with_total_epochs(TRAIN_EPOCHS)
    assert set(mf.trained_subjects) == {f"phantom-1-{i:03d}" for i in range(TRAIN_SUBJECTS)}


def test_synthesis_restores_fractured_heights(synthesiser, graded) -> None:
    """On held-out phantoms, the synthesised healthy height of the fractured vertebra's most
    affected third is closer to its true pre-fracture height than the fractured height is."""
    for subj, _, res in graded:
        for t in subj.phantom.truth:
            if not t.fractured:
                continue
            v = next(x for x in res.vertebrae if x.label == t.label)
            worst = max(("anterior", "middle", "posterior"), key=lambda r: getattr(t, f"loss_{r}"))
            before = getattr(t, f"height_{worst}_before_mm")
            after = getattr(t, f"height_{worst}_after_mm")
            synth = v.reference_mm.get(worst)
            assert synth is not None
            assert abs(synth - before) < abs(after - before), (t.level, synth, before, after)
            assert v.grade is not None and v.grade >= 1  # graded through the same code path
        assert res.provenance["reference_estimator"] == synthesiser.name


@pytest.mark.parametrize("orientation", ["RAS", "PIR"])
def test_synthesised_vertebra_maps_back_onto_the_original(synthesiser, orientation) -> None:
    subj = phantom_subject(2, seed=7, orientation=orientation, fractures=["L1:wedge:0.3"])
    ref = _Recording(synthesiser)
    res = grade_study(subj.study, reference=ref)
    ((measured, context),) = ref.calls  # one call, on the final measurement
    syntheses = synthesiser.synthesise(ref.straighten(measured, context))
    grid = subj.study.grid
    orig_bodies = res.grid.to_input_grid(res.bodies)
    for label in (19, 20):
        syn = syntheses[label].body_volume(grid.shape, grid.affine)
        assert (syn >= 0.5).sum() > 100
        idx = np.argwhere(syn >= 0.5).astype(float)
        c_syn = idx.mean(0) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        idx0 = np.argwhere(orig_bodies == label).astype(float)
        c_orig = idx0.mean(0) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        assert np.linalg.norm(c_syn - c_orig) < 2.0, (orientation, label, c_syn, c_orig)


def test_synthesis_reference_contract(synthesiser, graded) -> None:
    subj, ref, res = graded[0]
    assert isinstance(ref, ReferenceEstimator)
    ends = {res.vertebrae[0].label, res.vertebrae[-1].label}
    for v in res.vertebrae:
        if v.label in ends:  # no vertebra above or below: not gradable, with the reason
            assert v.status == "not_gradable" and "above and below" in v.reason
        else:
            assert v.status == "graded" and v.loss_map is not None
            assert v.reference_sources == (synthesiser.name,)
    # called once, with the final measurement and its context; a second call gives the same
    ((measured, context),) = ref.calls
    refs = ref.estimate(measured, context)
    for v in res.vertebrae:
        r = refs[v.label]
        assert r.heights == v.reference_mm and r.sources == v.reference_sources
    # the reference map lies on the vertebra's own footprint grid, NaN outside the footprint
    for mv in measured:
        r = refs[mv.label]
        if r.height_map_mm is not None:
            fp = mv.height_map.footprint
            assert r.height_map_mm.shape == fp.shape
            assert np.all(np.isnan(r.height_map_mm[~fp])) and np.all(
                np.isfinite(r.height_map_mm[fp])
            )
    # with a fallback the end vertebrae get the context's neighbour reference
    with_fb = SynthesisReference(synthesiser, fallback=True).estimate(measured, context)
    for lab in ends:
        assert with_fb[lab].heights is not None and "neighbours" in with_fb[lab].sources
        assert with_fb[lab].heights == context.neighbour_references[lab].heights
    # outside grade_study (no context): a clear error, not a silent guess
    with pytest.raises(ValueError, match="context"):
        SynthesisReference(synthesiser).estimate(measured)
    # labels alone: a clear error
    labels_only = replace(subj.study, ct=None)
    with pytest.raises(InputError, match="needs a CT"):
        grade_study(labels_only, reference=SynthesisReference(synthesiser))


def test_feature_file_and_grader_on_a_graded_study(tmp_path, synthesiser, graded) -> None:
    from vertgrade.synthesis.grader import (
        FEATURES_FILE,
        feature_names,
        fit_grader,
        write_synthesis_features,
    )

    subj, ref, res = graded[1]
    path = write_synthesis_features(res, ref, tmp_path)
    assert path == tmp_path / FEATURES_FILE
    # no timings: written again, the file is byte-identical
    again = write_synthesis_features(res, ref, tmp_path / "again")
    assert again.read_bytes() == path.read_bytes()
    doc = json.loads(path.read_text())
    assert "timings_s" not in doc["model"]
    assert doc["subject"] == subj.study.subject
    assert doc["model"]["trained_subjects"] == list(synthesiser.model.trained_subjects)
    names = feature_names(synthesiser.config.passes)
    assert len(names) == 6
    graded_rows = [v for v in doc["vertebrae"] if v["status"] == "graded"]
    assert graded_rows and all(set(v["features"]) == set(names) for v in graded_rows)
    frac = next(t for t in subj.phantom.truth if t.fractured)
    row = next(v for v in doc["vertebrae"] if v["label"] == frac.label)
    # the fractured vertebra lost height against both passes' references
    assert min(row["features"][n] for n in names) > 0.1
    # a grader fitted on synthetic features grades the study; threshold grade kept beside
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], 12)
    centre = np.array([0.02, 0.22, 0.32, 0.5])[y]
    x = centre[:, None] + rng.normal(0, 0.03, (y.size, len(names)))
    grader = fit_grader(x, y, [f"s{i % 8}" for i in range(y.size)], names)
    preds = grader.grade(res)
    assert set(preds) == {v.label for v in res.vertebrae if v.status == "graded"}
    p = preds[frac.label]
    assert p.grade >= 1 and 0 <= p.probability <= 1
    assert p.threshold_grade == next(v.grade for v in res.vertebrae if v.label == frac.label)


def test_grade_command_with_the_svm_grader(tmp_path, trained, fractured) -> None:
    """``vertgrade grade --reference synthesis --model M --grader G``: the SVM's grade with its
    probabilities in result.json and vertebrae.csv, the threshold grade kept beside it."""
    import csv

    from typer.testing import CliRunner

    from vertgrade.cli import app
    from vertgrade.phantom import write_phantom
    from vertgrade.synthesis.grader import feature_names, fit_grader, save_grader

    subj = fractured[0]
    write_phantom(subj.phantom, tmp_path / "ph")
    names = feature_names(TEST_CONFIG.passes)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], 12)
    x = np.array([0.02, 0.22, 0.32, 0.5])[y][:, None] + rng.normal(0, 0.03, (y.size, len(names)))
    grader = save_grader(
        fit_grader(x, y, [f"s{i % 8}" for i in range(y.size)], names), tmp_path / "g.joblib"
    )
    base = ["grade", str(tmp_path / "ph" / "ct.nii.gz"), "--labels",
            str(tmp_path / "ph" / "labels.nii.gz"), "--reference", "synthesis",
            "--model", str(trained.model_path), "-q"]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "thr")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "svm"), "--grader", str(grader)])
    assert res.exit_code == 0, res.output
    thr = json.loads((tmp_path / "thr" / "result.json").read_text())
    doc = json.loads((tmp_path / "svm" / "result.json").read_text())
    assert doc["provenance"]["grader"]["features"] == names
    assert doc["provenance"]["grader"]["sha256"] and doc["schema_version"] == SCHEMA_VERSION
    with open(tmp_path / "svm" / "vertebrae.csv", newline="") as fh:
        rows = {int(r["label"]): r for r in csv.DictReader(fh)}
    svm = [v for v in doc["vertebrae"] if v["grade_method"] == "svm"]
    # every vertebra the synthesis graded (all but the two ends) has the SVM's grade
    assert {v["label"] for v in svm} == {
        v["label"] for v in thr["vertebrae"] if v["status"] == "graded"
    }
    assert len(svm) >= 3
    frac = next(t for t in subj.phantom.truth if t.fractured)
    for v, before in zip(doc["vertebrae"], thr["vertebrae"], strict=True):
        assert v["threshold_grade"] == before["grade"]  # the threshold grading is unchanged
        if v["grade_method"] != "svm":
            assert v["grade"] == v["threshold_grade"] and v["grade_probabilities"] is None
            continue
        probs = v["grade_probabilities"]
        assert abs(sum(probs.values()) - 1) < 1e-3
        # the confidence is written to 2 decimals, the probabilities to 4
        assert v["confidence"] == pytest.approx(probs[str(v["grade"])], abs=0.0051)
        row = rows[v["label"]]
        assert row["grade_method"] == "svm" and int(row["grade"]) == v["grade"]
        assert float(row["grade_probability"]) == pytest.approx(probs[str(v["grade"])], abs=1e-4)
        assert int(row["threshold_grade"]) == before["grade"]
        assert (v["type"] is None) == (v["grade"] == 0)
        if v["label"] == frac.label:
            assert v["grade"] >= 1  # a 40 % wedge: the features put it far from grade 0


def test_training_is_deterministic_and_resumes(tmp_path, train_spines) -> None:
    cfg = replace(TEST_CONFIG, batch_size=4, passes=("sagittal",))
    spines = train_spines[:1]
    per_epoch = len(SliceDataset(spines, cfg)) // cfg.batch_size
    # the same data and seed give the same weights
    a = train_synthesis(spines, tmp_path / "a", config=cfg, epochs=2, max_steps=per_epoch)
    b = train_synthesis(spines, tmp_path / "b", config=cfg, epochs=2, max_steps=per_epoch)
    assert a.epochs_done == b.epochs_done == 1
    sa, sb = read_model_file(a.model_path).state, read_model_file(b.model_path).state
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a stopped run resumes from its checkpoint: interrupted + resumed == uninterrupted
    rest = train_synthesis(spines, tmp_path / "a", config=cfg, epochs=2)
    assert rest.resumed_from_epoch == 1 and rest.epochs_done == 2
    full = train_synthesis(spines, tmp_path / "c", config=cfg, epochs=2)
    sc, sd = read_model_file(full.model_path).state, read_model_file(rest.model_path).state
    assert all(torch.allclose(sc[k], sd[k], atol=1e-6) for k in sc)
    with pytest.raises(OutputError, match="another configuration"):
        train_synthesis(spines, tmp_path / "a", config=replace(cfg, cnum=8), epochs=2)


def test_samples_folder_round_trip(tmp_path) -> None:
    from vertgrade.phantom import write_phantom

    studies = []
    for i in range(2):
        subj = phantom_subject(i, seed=5)
        d = tmp_path / f"ph{i}"
        write_phantom(subj.phantom, d)
        studies.append((d / "ct.nii.gz", d / "labels.nii.gz"))
    grades = {"ct": {19: 0, 20: 0}}
    out = tmp_path / "samples"
    with pytest.raises(InputError, match="given twice"):
        build_samples(studies, grades, out, step_mm=2.0, half_width_mm=36.0)
    assert not out.exists()  # nothing half-written: the first study's file was staged only
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    with pytest.raises(InputError, match="given twice"):
        build_samples(studies, grades, out, step_mm=2.0, half_width_mm=36.0, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    studies = studies[:1]
    build_samples(studies, grades, out, step_mm=2.0, half_width_mm=36.0, force=True)
    (spine,) = load_samples(out)
    assert spine.vertebrae[19].grade == 0 and spine.vertebrae[18].grade is None
    assert spine.ct.dtype == np.uint8 and spine.step_mm == 2.0
    summary = train_synthesis(
        out, tmp_path / "m", config=replace(TEST_CONFIG, batch_size=4), epochs=1, max_steps=1
    )
    assert summary.trained_subjects == ("ct",)
    with pytest.raises(OutputError, match="not empty"):
        build_samples(studies, grades, out)


def test_model_file_errors(tmp_path, trained) -> None:
    from safetensors.torch import load_file, save_file

    with pytest.raises(ModelFileError, match="not found"):
        load_generator(tmp_path / "none.safetensors")
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        load_generator(bad)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(trained.model_path.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="not a readable"):
        load_generator(truncated)
    state = load_file(str(trained.model_path))
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain))
    with pytest.raises(ModelFileError, match="not a vertgrade synthesis model"):
        load_generator(plain)
    meta = read_model_file(trained.model_path)
    # weights of another configuration
    other = tmp_path / "other.safetensors"
    gen = Generator(replace(TEST_CONFIG, cnum=8))
    save_generator(other, gen, replace(TEST_CONFIG, cnum=8), trained_subjects=[])
    wrong = load_file(str(other))
    from safetensors import safe_open

    with safe_open(str(trained.model_path), framework="pt") as fh:
        md = dict(fh.metadata())
    mixed = tmp_path / "mixed.safetensors"
    save_file(wrong, str(mixed), metadata=md)
    with pytest.raises(ModelFileError, match="do not match its configuration"):
        load_generator(mixed)
    # another vertgrade version
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata=md | {"vertgrade": "9.9.0"})
    with pytest.raises(ModelFileError, match=r"vertgrade 9\.9\.0"):
        load_generator(old)
    assert meta.sha256 and meta.name.startswith("synthesis-tiny-")


def test_unavailable_device_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match=r"not supported|unknown device"):
        resolve_device("tpu")


def test_mild_fractures_are_targets_only_when_configured(train_spines) -> None:
    from vertgrade.synthesis.crops import VertebraExtent
    from vertgrade.synthesis.data import eligible_targets

    sp = train_spines[0]
    verts = dict(sp.vertebrae)
    verts[19] = replace(verts[19], grade=1)
    mild = replace(sp, vertebrae=verts)
    assert isinstance(verts[19], VertebraExtent)
    assert 19 not in eligible_targets(mild, TEST_CONFIG)  # default: grade 0 only
    assert 19 in eligible_targets(mild, replace(TEST_CONFIG, healthy_max_grade=1))
    assert 17 not in eligible_targets(sp, TEST_CONFIG)  # no vertebra above it


def test_slice_positions_cover_the_body() -> None:
    pos = slice_positions(named_config("paper"))
    assert pos.tolist() == [-16.0, -12.0, -8.0, -4.0, 0.0, 4.0, 8.0, 12.0, 16.0]


def test_training_targets_are_soft_and_in_range(train_spines) -> None:
    _, t = _batch(train_spines, TEST_CONFIG, 4)
    assert isinstance(t, TrainingTargets)
    for x in (t.truth, t.target_seg, t.neighbour_seg):
        assert float(x.min()) >= 0 and float(x.max()) <= 1
    soft = ((t.target_seg > 0.05) & (t.target_seg < 0.95)).float().mean()
    assert float(soft) > 0  # sub-voxel edges, not a hard mask


@pytest.mark.realdata
def test_samples_from_a_real_ct(tmp_path, data_dir, expert_grades) -> None:
    """VerSe sub-verse012 (3 x 1 x 1 mm, LPS): straightened with its expert grades; the
    straightened fractured L1 maps back onto its isolated body."""
    out = tmp_path / "samples"
    build_samples([data_dir / "verse012"], data_dir / "grades.csv", out)
    (spine,) = load_samples(out)
    assert spine.subject == "sub-verse012"
    for lab in (17, 20, 22):
        assert spine.vertebrae[lab].grade == expert_grades[("sub-verse012", lab)]
    assert spine.vertebrae[20].height_mm < spine.vertebrae[21].height_mm  # L1 is crushed
    from vertgrade.io.load import load_study

    study = load_study(data_dir / "verse012")
    core = grade_study(study)
    ext = spine.vertebrae[20]
    r0 = int(np.searchsorted(spine.t_mm, ext.t_top_mm - 6))
    r1 = int(np.searchsorted(spine.t_mm, ext.t_bottom_mm + 6))
    vals = (spine.body[r0:r1] / 255.0) * (spine.owner[r0:r1] == 20)
    back = spine.to_grid(
        vals, spine.t_mm[r0:r1], spine.ap_mm, spine.lr_mm, study.labels.shape, study.labels.affine
    )
    orig, mine = core.bodies == 20, back >= 0.5
    assert 2 * (orig & mine).sum() / (orig.sum() + mine.sum()) > 0.85


@pytest.mark.realdata
@pytest.mark.slow
def test_synthesis_data_cli_skips_subjects_without_ct(tmp_path, data_dir) -> None:
    """Every subject folder of the real data: those without a CT (verse004) are skipped with a
    line saying so, the others become samples."""
    from typer.testing import CliRunner

    from vertgrade.cli import app

    folders = sorted(p for p in data_dir.glob("verse*") if p.is_dir())
    no_ct = [p for p in folders if not list(p.glob("*_ct.nii*"))]
    res = CliRunner().invoke(
        app,
        [
            "synthesis-data",
            *map(str, folders),
            "-g",
            str(data_dir / "grades.csv"),
            "-o",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == 0, res.output
    for p in no_ct:
        assert f"skipped: {p}: has no CT" in res.stderr
    manifest = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert len(manifest["subjects"]) == len(folders) - len(no_ct)
    assert sorted(manifest["skipped"]) == sorted(map(str, no_ct))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    """A checkpoint whose unpickling would write a marker: one clear error, no marker (loaded
    with weights_only, which refuses anything but tensors and plain containers)."""
    import pickle as _pickle

    from vertgrade.synthesis.train import _load_checkpoint

    marker = tmp_path / "marker.txt"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.write_text, (marker, "code ran"))

    path = tmp_path / "checkpoint.pt"
    torch.save({"generator": Payload()}, path, pickle_module=_pickle)
    with pytest.raises(InputError, match="objects other than tensors") as info:
        _load_checkpoint(path)
    assert len(str(info.value).splitlines()) == 1
    assert not marker.exists()


def test_samples_skip_a_study_that_cannot_be_used(tmp_path) -> None:
    """A study without a CT is skipped with its reason (listed in samples.json), not the end of
    the run; when no study can be used nothing is written."""
    from vertgrade.phantom import write_phantom

    subj = phantom_subject(0, seed=5)
    good = tmp_path / "ph0"
    write_phantom(subj.phantom, good)
    bad = (tmp_path / "none" / "ct.nii.gz", good / "labels.nii.gz")
    seen: list[tuple[str, str]] = []
    out = tmp_path / "samples"
    build_samples(
        [bad, (good / "ct.nii.gz", good / "labels.nii.gz")],
        {"ct": {19: 0}},
        out,
        step_mm=2.0,
        half_width_mm=36.0,
        on_skip=lambda where, why: seen.append((where, why)),
    )
    manifest = json.loads((out / "samples.json").read_text())
    assert list(manifest["subjects"]) == ["ct"]
    assert list(manifest["skipped"]) == [str(bad[0])]
    assert seen == [(str(bad[0]), "no such file or folder")]
    with pytest.raises(InputError, match="none of the 1 studies could be used"):
        build_samples([bad], {}, tmp_path / "empty", step_mm=2.0, half_width_mm=36.0)
    assert not (tmp_path / "empty").exists()
