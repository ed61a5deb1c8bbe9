import pickle

import pytest
import torch
from safetensors.torch import save_file

from useg.backbones import BackboneConfig, build_backbone
from useg.backbones.vit import create_vit
from tests.conftest import write_image
from useg.data.frame import Frame
from useg.errors import ConfigError, WeightsError


def tiny(patch: int, **kw) -> BackboneConfig:
    args = dict(model="vit_tiny_patch16_224", patch_size=patch, embed_dim=64, depth=2, num_heads=2, input_size=(32, 48))
    return BackboneConfig(**{**args, **kw})


@pytest.mark.parametrize("patch", [8, 16])
def test_outputs_and_shapes(patch):
    backbone = build_backbone(tiny(patch))
    images = torch.randn(2, 3, 32, 48)
    out = backbone(images, qkv_blocks=(0, -1))
    h, w = 32 // patch, 48 // patch
    assert out.grid == (h, w)
    assert out.cls.shape == (2, 64) and out.patches.shape == (2, h, w, 64)
    assert out.attn.shape == (2, 2, h, w)
    assert set(out.qkv) == {0, 1}
    for tensor in out.qkv[1]:
        assert tensor.shape == (2, 2, 1 + h * w, 32)
    # CLS attention over patches: positive and, with the CLS->CLS term, sums to one per head
    assert (out.attn > 0).all() and (out.attn.sum(dim=(2, 3)) < 1).all()


def test_tokens_equal_timm_forward_features():
    backbone = build_backbone(tiny(8))
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = backbone(images)
        ref = backbone.model.forward_features(images)
    torch.testing.assert_close(out.cls, ref[:, 0])
    torch.testing.assert_close(out.patches.reshape(2, -1, 64), ref[:, 1:])


def test_attention_is_the_softmax_of_scaled_q_k():
    backbone = build_backbone(tiny(8))
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 32, 48), qkv_blocks=(-1,))
    q, k, _ = out.qkv[1]
    probs = ((q * 32**-0.5) @ k.transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(out.attn.reshape(1, 2, -1), probs[:, :, 0, 1:])


def _outputs(backbone):
    torch.manual_seed(1)
    with torch.no_grad():
        return backbone(torch.randn(1, 3, 32, 48)).patches


def test_weights_round_trip_through_pth_and_safetensors(tmp_path):
    source = build_backbone(tiny(8), seed=3)
    state = source.model.state_dict()
    torch.save(state, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        loaded = build_backbone(tiny(8, weights=str(tmp_path / name)), seed=99)
        torch.testing.assert_close(_outputs(loaded), _outputs(source))


def test_original_dino_checkpoint_layout_loads(tmp_path):
    source = build_backbone(tiny(8), seed=5)
    wrapped = {f"module.backbone.{k}": v for k, v in source.model.state_dict().items()}
    wrapped["module.head.last_layer.weight"] = torch.zeros(3, 3)
    torch.save({"teacher": wrapped, "epoch": 10}, tmp_path / "dino.pth")
    loaded = build_backbone(tiny(8, weights=str(tmp_path / "dino.pth")))
    torch.testing.assert_close(_outputs(loaded), _outputs(source))


def test_position_embedding_is_resampled_for_another_input_size(tmp_path):
    source = build_backbone(tiny(8, input_size=(64, 64)))
    torch.save(source.model.state_dict(), tmp_path / "w.pth")
    loaded = build_backbone(tiny(8, input_size=(32, 48), weights=str(tmp_path / "w.pth")))
    assert loaded.model.pos_embed.shape == (1, 1 + 4 * 6, 64)


def test_a_rectangular_position_embedding_is_resampled_from_the_grid_its_checkpoint_records(tmp_path):
    from timm.layers import resample_abs_pos_embed

    from useg.backbones.weights import with_grid

    source = build_backbone(tiny(8, input_size=(32, 48)))  # a 4 x 6 grid: 24 positions, not a square
    torch.save(with_grid(source.model), tmp_path / "w.pth")
    same = build_backbone(tiny(8, input_size=(32, 48), weights=str(tmp_path / "w.pth")))
    torch.testing.assert_close(_outputs(same), _outputs(source))
    square = build_backbone(tiny(8, input_size=(32, 32), weights=str(tmp_path / "w.pth")))
    expected = resample_abs_pos_embed(source.model.pos_embed.detach(), new_size=(4, 4), old_size=(4, 6), num_prefix_tokens=1)
    torch.testing.assert_close(square.model.pos_embed.detach(), expected)  # read as 4 x 6, not as a 24-long column
    torch.save(source.model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(WeightsError, match="24 patch positions, not a square grid.*backbone.input_size"):
        build_backbone(tiny(8, input_size=(32, 32), weights=str(tmp_path / "bare.pth")))


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone(tiny(8, weights=str(tmp_path / "absent.pth")))


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(create_vit(tiny(8, embed_dim=96, num_heads=3)).state_dict(), tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="shape mismatch"):
        build_backbone(tiny(8, weights=str(tmp_path / "w.pth")))


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_in_a_checkpoint_is_never_run(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"x": Payload()}, fh)
    with pytest.raises(WeightsError, match="cannot read"):
        build_backbone(tiny(8, weights=str(tmp_path / "evil.pth")))
    assert "code ran" not in capsys.readouterr().out


def test_pretrain_without_checkpoint_and_bad_model_are_config_errors():
    with pytest.raises(ConfigError, match="pretrain"):
        build_backbone(tiny(8, weights="pretrain"))
    with pytest.raises(ConfigError, match="cannot be built"):
        build_backbone(tiny(8, model="no_such_vit"))


def test_random_init_is_seeded():
    a, b, c = build_backbone(tiny(8), seed=1), build_backbone(tiny(8), seed=1), build_backbone(tiny(8), seed=2)
    torch.testing.assert_close(_outputs(a), _outputs(b))
    assert not torch.allclose(_outputs(a), _outputs(c))


def test_cli_start_up_does_not_import_torch():
    """Stages without a backbone (evaluate, k-means, reports) start without torch, timm or torchvision."""
    import subprocess
    import sys

    code = (
        "import sys; from useg.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_damaged_checkpoint_error_never_advises_weights_only_false(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"cannot read backbone weights .*w\.pth: Unsupported operand") as caught:
        build_backbone(tiny(8, weights=str(tmp_path / "w.pth")))
    assert "weights_only" not in str(caught.value) and "state_dict()" in str(caught.value)


def test_weights_with_nan_tensors_are_refused_naming_the_file_and_tensors(tmp_path):
    state = create_vit(tiny(8)).state_dict()
    state["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan\.pth hold NaN or infinite values in 1 tensor\(s\) \(blocks\.0\.attn\.qkv\.weight\)"):
        build_backbone(tiny(8, weights=str(tmp_path / "nan.pth")))


def test_extreme_weights_giving_nan_features_fail_the_feature_shard(tmp_path):
    from useg.backbones.extract import extract_features
    from useg.data.manifest import ManifestRow

    write_image(tmp_path / "a.png", (32, 32))
    cfg = tiny(8, input_size=(32, 32))
    backbone = build_backbone(cfg)
    with torch.no_grad():
        backbone.model.blocks[0].mlp.fc1.weight.fill_(3e38)  # finite, but its products overflow
    rows = [(0, ManifestRow("a", str(tmp_path / "a.png"), 32, 32, "val"))]
    with pytest.raises(WeightsError, match=r"produced NaN or infinite features for .*a\.png"):
        extract_features(backbone, rows, tmp_path / "s.zarr", Frame((32, 32)), {}, torch.device("cpu"))
    assert not (tmp_path / "s.zarr").exists()


def test_an_empty_shard_is_a_store_of_no_images_that_later_stages_read(tmp_path):
    from useg.backbones.extract import extract_features
    from useg.data.manifest import ManifestRow, shard_rows
    from useg.methods.kmeans.stages import fit_patch_kmeans, predict_patch_kmeans
    from useg.stores import FeatureStore, Predictions

    write_image(tmp_path / "a.png", (32, 32))
    rows = [(0, ManifestRow("a", str(tmp_path / "a.png"), 32, 32, "val"))]  # 1 image, 2 shards: shard 0 is empty
    backbone, paths = build_backbone(tiny(8, input_size=(32, 32))), [tmp_path / "s0.zarr", tmp_path / "s1.zarr"]
    for shard, path in enumerate(paths):
        extract_features(backbone, shard_rows(rows, shard, 2), path, Frame((32, 32)), {}, torch.device("cpu"))
    stores = [FeatureStore(p) for p in paths]
    assert [len(s) for s in stores] == [0, 1]
    cfg = {"normalize": True, "max_train_points": 100, "niter": 5, "nredo": 1}
    fit_patch_kmeans(stores, 3, cfg, 0, tmp_path / "c.zarr", {})
    predict_patch_kmeans(stores, tmp_path / "c.zarr", tmp_path / "p.zarr", {})
    assert list(Predictions(tmp_path / "p.zarr").index) == [0]


def test_timm_tag_offline_fails_at_once_from_the_cache_only(monkeypatch):
    import huggingface_hub.constants

    from useg.backbones.weights import hub_reachable

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert not hub_reachable()
    with pytest.raises(WeightsError, match=r"could not get timm pretrained weights 'vit_tiny_patch16_224\.augreg_in21k'.*Offline\?"):
        build_backbone(tiny(16, weights="vit_tiny_patch16_224.augreg_in21k"))
    assert huggingface_hub.constants.HF_HUB_OFFLINE, "the hub client was put in offline mode: no retries"
