"""TransFGU beside its authors' release on identical tensors: Grad-CAM maps, decoder, diversity loss, optimiser.

Imports the release's own modules from a checkout (`--release`, github.com/damo-cv/TransFGU; nothing of
it is vendored here) and runs them next to useg's `release` settings on the same random ViT weights,
images, concepts and decoder weights:

- Grad-CAM (eq. 5–7): the release's `Segmenter.get_grad_mask` vs `release_response_maps` with
  `gradcam_loss_batch` = its batch, and at batch 1 (useg's per-image maps); its maps under a common
  rescale of the centroids; how many of the `paper` rule's labels a per-concept rescale changes;
- decoder (eq. 2): its `MaskTransformer` vs `Segmenter` with the weights copied across (q/k/v bias 0);
- diversity loss (eq. 15): its `cls_emb_loss` vs `diversity_loss`, value and gradient at K = 27, d = 384,
  and the `paper` form's gradient norm relative to it;
- training steps: its Adam param groups, ±1 gradient clamp and skip of non-positive losses vs
  `build_optimiser` + `descend` + `total_loss` (peer loss off, as before its bootstrapping starts),
  dropout off in both (the draws differ).

Also: how often float16 storage changes the arg-max of the normalised maps of each rule.

    python benchmarks/transfgu_release.py --release /path/to/TransFGU --out benchmarks/results/transfgu_release.json

The release's segmenter module imports mmcv's `roi_align` (used only by its training augmentation):
the import is satisfied by an empty module, so mmcv need not be installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_VIT, save  # noqa: E402

from useg.backbones import BackboneConfig, build_backbone  # noqa: E402
from useg.methods.transfgu import gradcam as gc  # noqa: E402
from useg.methods.transfgu.losses import LossConfig, diversity_loss, total_loss  # noqa: E402
from useg.methods.transfgu.segmenter import Segmenter, SegmenterConfig  # noqa: E402
from useg.train.descent import build_optimiser, descend  # noqa: E402


def import_release(root: Path) -> types.SimpleNamespace:
    """The release's ViT, Segmenter, MaskTransformer, losses and param-group function, from its checkout."""
    for name in ("mmcv", "mmcv.ops", "mmcv.ops.roi_align"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["mmcv.ops.roi_align"].roi_align = None
    sys.path.insert(0, str(root))
    import models.vision_transformer.vision_transformer as vit
    from models.loss.BootstrappingLoss import thingstuff_bootstrap_loss
    from models.loss.CLSEmbLoss import cls_emb_loss
    from models.mask_transformer.decoder import MaskTransformer
    from models.segmenter.segmenter_thingstuff import Segmenter as ReleaseSegmenter

    # utils/misc.py imports cluster-only packages (hostlist); only its get_params_groups is needed
    source = (root / "utils" / "misc.py").read_text()
    namespace: dict[str, Any] = {}
    exec(re.search(r"def get_params_groups.*?\n    \]\n", source, re.S).group(0), namespace)  # noqa: S102
    return types.SimpleNamespace(
        vit=vit, segmenter=ReleaseSegmenter, decoder=MaskTransformer, cls_emb_loss=cls_emb_loss,
        bootstrap_loss=thingstuff_bootstrap_loss, param_groups=namespace["get_params_groups"],
    )  # fmt: skip


def release_vit(release: types.SimpleNamespace, ours: nn.Module) -> nn.Module:
    """The release's (DINO) ViT with the weights of useg's timm backbone."""
    size, patch = TINY_VIT["input_size"][0], TINY_VIT["patch_size"]
    theirs = release.vit.VisionTransformer(
        img_size=[size], patch_size=patch, embed_dim=TINY_VIT["embed_dim"], depth=TINY_VIT["depth"],
        num_heads=TINY_VIT["num_heads"], mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    theirs.load_state_dict({k: v for k, v in ours.model.state_dict().items() if k in theirs.state_dict()})
    return theirs.eval()


def compare_gradcam(release: types.SimpleNamespace, batch: int, k: int) -> dict[str, float]:
    """Release Grad-CAM maps vs useg's `release` rule, at the release's batch and per image."""
    ours = build_backbone(BackboneConfig.from_dict(TINY_VIT), seed=0).eval().requires_grad_(False)
    encoder = release_vit(release, ours)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *TINY_VIT["input_size"], generator=g)
    centroids = torch.randn(k, TINY_VIT["embed_dim"], generator=g) * torch.linspace(0.5, 2, k)[:, None]
    holder = types.SimpleNamespace(decoder=types.SimpleNamespace(patch_size=TINY_VIT["patch_size"]), n_cls=k, encoder=encoder)

    def theirs(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return release.segmenter.get_grad_mask(holder, x, s[None])

    grid = ours.grid_for(*TINY_VIT["input_size"])
    path = gc.ClsPath(ours, images)
    attn = gc.cls_patch_rows(path.row, grid, 1)

    def grads(s: torch.Tensor, rule: str) -> torch.Tensor:
        return gc.cls_patch_rows(gc.concept_gradients(path, s, rule), grid, 1)

    rel_batch, rel_single = theirs(images, centroids), torch.cat([theirs(images[i : i + 1], centroids) for i in range(batch)])
    mine_batch = gc.release_response_maps(attn, grads(centroids, "release"), batch, 0.8)
    mine_single = gc.release_response_maps(attn, grads(centroids, "release"), 1, 0.8)
    scale = torch.linspace(0.5, 2, k)[torch.randperm(k, generator=g)][:, None]
    paper, paper_scaled = gc.response_maps(attn, grads(centroids, "paper")), gc.response_maps(attn, grads(centroids * scale, "paper"))
    float16 = {}
    for rule in gc.GRADCAM_RULES:
        maps = gc.concept_maps(attn, grads(centroids, rule), gc.LabelConfig(gradcam=rule))
        float16[rule] = float((maps.half().float().argmax(1) != maps.argmax(1)).float().mean())
    return {
        "maps_max_abs_diff_at_release_batch": float((mine_batch - rel_batch).abs().max()),
        "maps_max_abs_diff_per_image": float((mine_single - rel_single).abs().max()),
        "release_labels_equal_batch_vs_per_image": float((rel_batch.argmax(1) == rel_single.argmax(1)).float().mean()),
        "release_maps_max_abs_diff_batch_vs_per_image": float((rel_batch - rel_single).abs().max()),
        "release_maps_max_abs_diff_centroids_x3": float((theirs(images, centroids * 3) - rel_batch).abs().max()),
        "paper_labels_changed_by_per_concept_rescale": float((paper.argmax(1) != paper_scaled.argmax(1)).float().mean()),
        "float16_argmax_changed": float16,
    }


def copy_decoder(theirs: nn.Module, ours: Segmenter) -> None:
    """The release decoder's weights into useg's Segmenter (its blocks have no q/k/v bias: set to 0, frozen)."""
    with torch.no_grad():
        ours.proj_in.load_state_dict(theirs.proj_dec.state_dict())
        ours.class_embed.copy_(theirs.cls_emb)
        for block, layer in zip(theirs.blocks, ours.blocks.layers):
            layer.norm1.load_state_dict(block.norm1.state_dict())
            layer.norm2.load_state_dict(block.norm2.state_dict())
            layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
            layer.self_attn.in_proj_bias.zero_()
            layer.self_attn.in_proj_bias.requires_grad_(False)
            layer.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
            layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
            layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
        ours.norm.load_state_dict(theirs.decoder_norm.state_dict())
        ours.proj_patch.weight.copy_(theirs.proj_patch.T)
        ours.proj_class.weight.copy_(theirs.proj_classes.T)
        ours.mask_norm.load_state_dict(theirs.mask_norm.state_dict())


def no_dropout(model: nn.Module) -> None:
    """Dropout off (the two implementations draw their masks differently)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0


def compare_decoder_and_training(release: types.SimpleNamespace, steps: int) -> dict[str, Any]:
    """Decoder masks with shared weights, then `steps` optimiser steps of both on the same batches."""
    torch.manual_seed(1)
    in_dim, dim, labels, heads = TINY_VIT["embed_dim"], 32, 5, 4
    theirs = release.decoder(n_cls=labels, patch_size=8, d_encoder=in_dim, n_layers=2, n_heads=heads, d_model=dim, d_ff=4 * dim)
    ours = Segmenter(SegmenterConfig(in_dim, labels, dim=dim, layers=2, heads=heads))
    copy_decoder(theirs, ours)
    x = torch.randn(3, 6, 6, in_dim)
    with torch.no_grad():
        their_masks, their_classes = theirs.eval()(x.reshape(3, 36, in_dim), ret_cls_emb=True)
        our_masks, our_classes = ours.eval()(x)
    result: dict[str, Any] = {
        "masks_max_abs_diff": float((our_masks.flatten(2).transpose(1, 2) - their_masks).abs().max()),
        "class_embeddings_max_abs_diff": float((our_classes - their_classes).abs().max()),
    }
    no_dropout(theirs), no_dropout(ours)
    holder = nn.Module()
    holder.decoder = theirs.train()
    ours.train()
    frozen_encoder = types.SimpleNamespace(encoder=types.SimpleNamespace(fix=1, lr_scale=0.1))
    their_opt = torch.optim.Adam(
        release.param_groups(holder, types.SimpleNamespace(lr=1e-4, model=frozen_encoder)), lr=1e-4, weight_decay=5e-4
    )
    our_opt = build_optimiser(ours, "adam", 1e-4, 5e-4)
    losses = []
    for _ in range(steps):
        x, maps = torch.randn(4, 6, 6, in_dim) * 3, torch.rand(4, labels, 6, 6)
        masks, classes = theirs(x.reshape(4, 36, in_dim), ret_cls_emb=True)
        cat, unc, _ = release.bootstrap_loss(masks.transpose(1, 2).reshape(4, labels, 6, 6), pseudo_label=maps)
        their_loss = cat.mean() + 0.3 * unc.mean() + release.cls_emb_loss(classes).mean()
        their_opt.zero_grad()
        if their_loss > 0:
            their_loss.backward()
            for param in holder.parameters():
                if param.grad is not None:
                    param.grad.data.clamp_(-1, 1)
            their_opt.step()
        logits, classes = ours(x)
        target = maps.argmax(1)
        our_loss, _ = total_loss(logits, classes, target, target, 0.0, LossConfig(peer=False))
        descend(our_opt, our_loss, 1.0, True)
        losses.append(abs(their_loss.item() - our_loss.item()))
    copy = Segmenter(ours.cfg)
    copy_decoder(theirs, copy)
    worst = max((a - b).abs().max().item() for a, b in zip(ours.state_dict().values(), copy.state_dict().values()))
    result.update({"steps": steps, "loss_max_abs_diff": max(losses), "weights_max_abs_diff_after_steps": worst})
    return result


def compare_diversity(release: types.SimpleNamespace, k: int = 27, d: int = 384) -> dict[str, float]:
    """Diversity loss value and gradient: release vs `release` form; `paper` form's gradient norm ratio."""
    classes = nn.functional.normalize(torch.randn(4, k, d, generator=torch.Generator().manual_seed(2)), dim=-1)
    classes.requires_grad_(True)
    theirs = release.cls_emb_loss(classes).mean()
    ours, paper = diversity_loss(classes, "release"), diversity_loss(classes, "paper")
    (g_theirs,), (g_ours,), (g_paper,) = (torch.autograd.grad(v, classes) for v in (theirs, ours, paper))
    return {
        "k": k, "d": d, "loss_abs_diff": abs(theirs.item() - ours.item()),
        "grad_max_abs_diff": float((g_theirs - g_ours).abs().max()), "paper_grad_norm_ratio": float(g_paper.norm() / g_theirs.norm()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True, type=Path, help="a checkout of github.com/damo-cv/TransFGU")
    parser.add_argument("--batch", type=int, default=8, help="images per Grad-CAM batch (the release's COCO labels: 8)")
    parser.add_argument("--k", type=int, default=7, help="concepts")
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps compared")
    parser.add_argument("--out", default="benchmarks/results/transfgu_release.json")
    args = parser.parse_args()
    release = import_release(args.release.resolve())
    save(
        {
            "benchmark": "transfgu-release",
            "gradcam": compare_gradcam(release, args.batch, args.k),
            "decoder_and_training": compare_decoder_and_training(release, args.steps),
            "diversity": compare_diversity(release),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
