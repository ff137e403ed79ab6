"""FineGAN (Singh, Ojha & Lee, "FineGAN: Unsupervised Hierarchical Disentanglement for
Fine-Grained Object Generation and Discovery", CVPR 2019): a background, a parent stage
(shape and pose, with a mask) and a child stage (texture, with a second mask) from four
codes z, b, p, c.

Written after the authors' code, github.com/kkanshul/finegan `code/model.py` (G_NET,
INIT_STAGE_G, NEXT_STAGE_G, GET_IMAGE_G, GET_MASK_G, D_NET, GLU, upBlock, ResBlock) and
`code/cfg/train.yml` (GF_DIM = DF_DIM = 64, Z_DIM = 100, R_NUM = 2, 20 parents and 200
children for CUB). Not a copy: the names are ours, the arithmetic is theirs.

Generator (`FineGANGenerator`), gf = gf_dim:
- trunk (INIT_STAGE_G, ngf = 16 gf): concat(code, z) -> Linear (no bias) -> BN1d -> GLU
  -> (16 gf, 4, 4), then 5 blocks [nearest x2, conv3x3 (no bias), BN, GLU] with
  16gf -> 8gf -> 4gf -> 2gf -> gf -> gf channels: (gf, 128, 128);
- background: trunk on (z, b) -> conv3x3 -> tanh; resized to 126x126 for its
  discriminator (nn.UpsamplingBilinear2d, i.e. bilinear with align_corners=True);
- parent: trunk on (z, p), then NEXT_STAGE_G(gf): the code tiled over the map and
  concatenated in front, conv3x3-BN-GLU to gf, `residual` ResBlocks (conv-BN-GLU-conv-BN,
  plus the input), conv3x3-BN-GLU to gf/2 ("samesample"); RGB head (conv3x3, tanh) and
  mask head (conv3x3, sigmoid);
- child: NEXT_STAGE_G(gf/2) on the parent features and c, to gf/4; RGB and mask heads;
- compositing: P = Pf * Pm + B * (1 - Pm), C = Cf * Cm + P * (1 - Cm) (B at 128x128).
Every conv is bias-free, as in the code.

Discriminators, df = df_dim:
- background (D_NET(0)): conv4 s2 (3 -> df), LReLU, conv4 s2 (-> 2df), LReLU, conv4 s1
  (-> 4df), LReLU, no padding and no BN; two heads conv4 s1 (with bias) + sigmoid. On
  126x126: 62 -> 30 -> 27 -> 24, so 24x24 patch scores, each seeing a 34-pixel receptive
  field at stride 4 (patch i covers input pixels 4i .. 4i + 33). Head 0 classifies
  background (label 1) against object (label 0) patches, head 1 is real/fake.
- parent and child (D_NET(1), D_NET(2)): conv4 s2 to df (LReLU), three more conv4 s2 +
  BN + LReLU to 8df (128 -> 8), downBlock to 16df (-> 4), conv3x3-BN-LReLU to 8df; the
  info head: conv3x3-BN-LReLU ("jointConv") then conv4 stride 4 (with bias) to the code
  logits; the real/fake head: conv4 stride 4 + sigmoid on the features before jointConv.

Codes: one-hot. In training they are tied (`tie_codes`): b = c and p = c // (Nc / Np)
(the code's `child_to_parent`), which needs Nc to be a multiple of Np.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydeform.options import ModelConfig, check_ints, option

__all__ = [
    "FineGANConfig",
    "FineGANGenerator",
    "FineGANOutput",
    "BackgroundDiscriminator",
    "StageDiscriminator",
    "GLU",
    "ResBlock",
    "conv3x3",
    "glu_block",
    "composite",
    "tie_codes",
    "one_hot",
    "background_patch_weights",
    "init_weights",
    "IMAGE_SIZE",
    "BACKGROUND_D_SIZE",
    "PATCH_GRID",
    "PATCH_FIELD",
    "PATCH_STRIDE",
]

IMAGE_SIZE = 128  # the generator's output side (5 doublings of 4)
BACKGROUND_D_SIZE = 126  # the background discriminator's input side
PATCH_GRID = 24  # its output: 24 x 24 patch scores
PATCH_FIELD = 34  # receptive field of one patch score (the code's recp_field)
PATCH_STRIDE = 4  # and its stride (patch_stride)


@dataclass
class FineGANConfig(ModelConfig):
    """The networks' sizes (saved in checkpoints). CUB: 200 backgrounds, 20 parents, 200
    children, z 100, gf = df = 64. With tied codes (training) backgrounds == children."""

    z_dim: int = option(100, "noise dimension (FineGAN's Z_DIM)")
    backgrounds: int = option(200, "background codes Nb (= children when codes are tied)")
    parents: int = option(20, "parent (shape) codes Np (FineGAN's SUPER_CATEGORIES)")
    children: int = option(200, "child (texture) codes Nc, a multiple of Np (FINE_GRAINED_CATEGORIES)")
    gf_dim: int = option(64, "generator width gf (a multiple of 4; FineGAN's GF_DIM)")
    df_dim: int = option(64, "discriminator width df (FineGAN's DF_DIM)")
    residual: int = option(2, "residual blocks per stage (FineGAN's R_NUM)")

    def __post_init__(self) -> None:
        check_ints(self, ("z_dim", "backgrounds", "parents", "children", "gf_dim", "df_dim"))
        check_ints(self, ("residual",), minimum=0)
        if self.gf_dim % 4:
            raise ValueError(f"gf_dim must be a multiple of 4 (the child stage has gf_dim / 4 channels), got {self.gf_dim}")
        if self.children % self.parents:
            raise ValueError(
                f"children ({self.children}) must be a multiple of parents ({self.parents}): tied codes map child c "
                f"to parent c // (children / parents)"
            )


# ----------------------------------------------------------------------------- codes


def one_hot(index: Tensor, classes: int) -> Tensor:
    """(B,) int64 -> (B, classes) float one-hot; ValueError for an index out of range."""
    if index.dim() != 1:
        raise ValueError(f"index must be (B,), got shape {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= classes):
        raise ValueError(f"code index out of range [0, {classes}): {index.tolist()}")
    return F.one_hot(index.long(), classes).float()


def tie_codes(child: Tensor, children: int, parents: int) -> tuple[Tensor, Tensor]:
    """FineGAN's tied codes (`child_to_parent` and `bg_code = c_code` in G_NET.forward):
    child indices (B,) -> (parent indices (B,), background indices (B,)) with
    parent = child // (children / parents) and background = child. Refuses children that
    are not a multiple of parents."""
    if children % parents:
        raise ValueError(f"children ({children}) must be a multiple of parents ({parents}) to tie the codes")
    if child.dim() != 1:
        raise ValueError(f"child must be (B,) indices, got shape {tuple(child.shape)}")
    if child.numel() and (int(child.min()) < 0 or int(child.max()) >= children):
        raise ValueError(f"child index out of range [0, {children})")
    return torch.div(child, children // parents, rounding_mode="floor"), child.clone()


# ----------------------------------------------------------------------------- blocks


class GLU(nn.Module):
    """x[:, :C/2] * sigmoid(x[:, C/2:]) over the channel dimension (dim 1)."""

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        if x.shape[1] % 2:
            raise ValueError(f"GLU needs an even channel count, got {x.shape[1]}")
        return x[:, :half] * torch.sigmoid(x[:, half:])


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def glu_block(cin: int, cout: int, upsample: bool) -> nn.Sequential:
    """upBlock (upsample=True) / sameBlock: [nearest x2,] conv3x3 to 2 cout, BN, GLU."""
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
    return nn.Sequential(*layers, conv3x3(cin, cout * 2), nn.BatchNorm2d(cout * 2), GLU())


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), GLU(),
                                   conv3x3(channels, channels), nn.BatchNorm2d(channels))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + x


class Trunk(nn.Module):
    """INIT_STAGE_G: fc (no bias) + BN1d + GLU to (ngf, 4, 4), then nearest-upsample GLU
    blocks through `widths` (FineGAN's: ngf / 2, / 4, / 8, / 16, / 16, to 128x128).
    forward(first, second) concatenates them in that order (FineGAN: the code, then z)."""

    def __init__(self, in_dim: int, ngf: int, widths: list[int] | None = None) -> None:
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Sequential(nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        chain = [ngf, *(widths or [ngf // 2, ngf // 4, ngf // 8, ngf // 16, ngf // 16])]
        self.ups = nn.Sequential(*[glu_block(a, b, True) for a, b in zip(chain[:-1], chain[1:])])

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        return self.ups(self.fc(torch.cat([first, second], 1)).view(-1, self.ngf, 4, 4))


class NextStage(nn.Module):
    """NEXT_STAGE_G: the code tiled and concatenated, conv-BN-GLU, residual blocks, and a
    halving conv-BN-GLU: (ngf, S, S) -> (ngf / 2, S, S)."""

    def __init__(self, ngf: int, code_dim: int, residual: int) -> None:
        super().__init__()
        self.code_dim = code_dim
        self.joint = glu_block(ngf + code_dim, ngf, False)
        self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(residual)])
        self.same = glu_block(ngf, ngf // 2, False)

    def forward(self, h: Tensor, code: Tensor) -> Tensor:
        tiled = code.view(-1, self.code_dim, 1, 1).expand(-1, -1, h.shape[2], h.shape[3])
        return self.same(self.residual(self.joint(torch.cat([tiled, h], 1))))


class FineGANOutput(NamedTuple):
    """Everything G_NET returns (images in [-1, 1], masks in [0, 1], all (B, ., 128, 128)
    except background_small (B, 3, 126, 126)), plus the parent features."""

    background: Tensor
    background_small: Tensor  # resized for the background discriminator
    parent: Tensor  # P = Pf Pm + B (1 - Pm)
    child: Tensor  # C = Cf Cm + P (1 - Cm)
    parent_foreground: Tensor
    child_foreground: Tensor
    parent_mask: Tensor
    child_mask: Tensor
    parent_masked: Tensor  # Pf * Pm (the info loss input)
    child_masked: Tensor  # Cf * Cm
    parent_features: Tensor  # (B, gf / 2, 128, 128): MixNMatch's feature mode replaces these


def composite(foreground: Tensor, mask: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
    """(foreground * mask + background * (1 - mask), foreground * mask)."""
    masked = foreground * mask
    return masked + background * (1 - mask), masked


class FineGANGenerator(nn.Module):
    """G_NET. forward(z (B, z_dim), c (B, Nc) one-hot or soft, p (B, Np) = None,
    b (B, Nb) = None) -> FineGANOutput; p and b default to the tied codes of c's argmax."""

    def __init__(self, config: FineGANConfig) -> None:
        super().__init__()
        self.config = config
        gf = config.gf_dim
        self.background_trunk = Trunk(config.z_dim + config.backgrounds, gf * 16)
        self.background_image = nn.Sequential(conv3x3(gf, 3), nn.Tanh())
        self.parent_trunk = Trunk(config.z_dim + config.parents, gf * 16)
        self.parent_stage = NextStage(gf, config.parents, config.residual)
        self.parent_image = nn.Sequential(conv3x3(gf // 2, 3), nn.Tanh())
        self.parent_mask = nn.Sequential(conv3x3(gf // 2, 1), nn.Sigmoid())
        self.child_stage = NextStage(gf // 2, config.children, config.residual)
        self.child_image = nn.Sequential(conv3x3(gf // 4, 3), nn.Tanh())
        self.child_mask = nn.Sequential(conv3x3(gf // 4, 1), nn.Sigmoid())

    def _check(self, name: str, code: Tensor, size: int, batch: int) -> None:
        if code.dim() != 2 or code.shape != (batch, size):
            raise ValueError(f"{name} must be ({batch}, {size}), got {tuple(code.shape)}")

    def draw_background(self, z: Tensor, b: Tensor) -> Tensor:
        return self.background_image(self.background_trunk(b, z))

    def draw_parent_features(self, z: Tensor, p: Tensor) -> Tensor:
        return self.parent_stage(self.parent_trunk(p, z), p)

    def forward(
        self, z: Tensor, c: Tensor, p: Tensor | None = None, b: Tensor | None = None,
        parent_features: Tensor | None = None,
    ) -> FineGANOutput:  # fmt: skip
        cfg = self.config
        batch = z.shape[0]
        self._check("z", z, cfg.z_dim, batch)
        self._check("c", c, cfg.children, batch)
        if p is None or b is None:
            if cfg.backgrounds != cfg.children:
                raise ValueError("tied codes (p or b not given) need backgrounds == children")
            tied_p, tied_b = tie_codes(c.argmax(1), cfg.children, cfg.parents)
            p = one_hot(tied_p, cfg.parents) if p is None else p
            b = one_hot(tied_b, cfg.backgrounds) if b is None else b
        self._check("p", p, cfg.parents, batch)
        self._check("b", b, cfg.backgrounds, batch)
        background = self.draw_background(z, b)
        small = F.interpolate(background, size=(BACKGROUND_D_SIZE, BACKGROUND_D_SIZE), mode="bilinear",
                              align_corners=True)  # fmt: skip
        h_parent = self.draw_parent_features(z, p) if parent_features is None else parent_features
        parent_fg, parent_mask = self.parent_image(h_parent), self.parent_mask(h_parent)
        parent, parent_masked = composite(parent_fg, parent_mask, background)
        h_child = self.child_stage(h_parent, c)
        child_fg, child_mask = self.child_image(h_child), self.child_mask(h_child)
        child, child_masked = composite(child_fg, child_mask, parent)
        return FineGANOutput(background, small, parent, child, parent_fg, child_fg, parent_mask, child_mask,
                             parent_masked, child_masked, h_parent)  # fmt: skip


# ----------------------------------------------------------------------------- discriminators


class BackgroundDiscriminator(nn.Module):
    """D_NET(0): (B, 3, 126, 126) -> (classifier, real_fake), each (B, 1, 24, 24) in (0, 1).
    classifier: 1 = background patch, 0 = object patch (the labels the code trains it
    with; its comment and the paper say the opposite)."""

    def __init__(self, df: int) -> None:
        super().__init__()
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.encode = nn.Sequential(
            nn.Conv2d(3, df, 4, 2, 0, bias=False), lrelu(),
            nn.Conv2d(df, df * 2, 4, 2, 0, bias=False), lrelu(),
            nn.Conv2d(df * 2, df * 4, 4, 1, 0, bias=False), lrelu(),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Conv2d(df * 4, 1, 4, 1), nn.Sigmoid())
        self.real_fake = nn.Sequential(nn.Conv2d(df * 4, 1, 4, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encode(x)
        return self.classifier(h), self.real_fake(h)


class StageDiscriminator(nn.Module):
    """D_NET(1) / D_NET(2): (B, 3, 128, 128) -> (code logits (B, classes), real/fake (B,)
    in (0, 1)). `info_parameters()`: jointConv and the code head (which FineGAN updates
    with the generator's optimiser for the child stage)."""

    def __init__(self, df: int, classes: int) -> None:
        super().__init__()
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.classes = classes
        self.encode = nn.Sequential(
            nn.Conv2d(3, df, 4, 2, 1, bias=False), lrelu(),
            nn.Conv2d(df, df * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(df * 2), lrelu(),
            nn.Conv2d(df * 2, df * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(df * 4), lrelu(),
            nn.Conv2d(df * 4, df * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(df * 8), lrelu(),
            nn.Conv2d(df * 8, df * 16, 4, 2, 1, bias=False), nn.BatchNorm2d(df * 16), lrelu(),
            conv3x3(df * 16, df * 8), nn.BatchNorm2d(df * 8), lrelu(),
        )  # fmt: skip
        self.joint = nn.Sequential(conv3x3(df * 8, df * 8), nn.BatchNorm2d(df * 8), lrelu())
        self.logits = nn.Conv2d(df * 8, classes, 4, 4)
        self.real_fake = nn.Sequential(nn.Conv2d(df * 8, 1, 4, 4), nn.Sigmoid())

    def info_parameters(self) -> list[nn.Parameter]:
        return [*self.joint.parameters(), *self.logits.parameters()]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encode(x)
        return self.logits(self.joint(h)).view(-1, self.classes), self.real_fake(h).view(-1)


# ----------------------------------------------------------------------------- init and labels


def init_weights(module: nn.Module) -> None:
    """FineGAN's weights_init, for module.apply: orthogonal conv and linear weights (gain 1),
    BatchNorm weights N(1, 0.02) and biases 0, linear biases 0 (conv biases keep torch's
    default initialisation, as in the code)."""
    name = type(module).__name__
    if "Conv" in name:
        nn.init.orthogonal_(module.weight, 1.0)
    elif "BatchNorm" in name:
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.zero_()
    elif "Linear" in name:
        nn.init.orthogonal_(module.weight, 1.0)
        if module.bias is not None:
            module.bias.data.zero_()


def background_patch_weights(box: Tensor, grid: int = PATCH_GRID, field: int = PATCH_FIELD,
                             stride: int = PATCH_STRIDE, size: int = BACKGROUND_D_SIZE) -> Tensor:  # fmt: skip
    """Which background-discriminator patches see only background (FineGAN trainer.py,
    train_Dnet, idx 0): box (B, 4) = (y1, x1, y2, x2) in pixels of the 126x126 crop (the
    order datasets.py's warped_bbox holds) -> weights (B, 1, grid, grid), 1 for background
    patches, 0 for the patches whose receptive field touches the box:

        rows  [max(0, ceil((y1 - field) / stride)), min(grid - 1, floor(grid - 1 - (size - field - y2) / stride)) + 1)
        cols  the same with x1, x2

    A degenerate box (y1 == y2 or x1 == x2, e.g. cropped away) excludes nothing."""
    if box.dim() != 2 or box.shape[1] != 4:
        raise ValueError(f"box must be (B, 4) as (y1, x1, y2, x2), got shape {tuple(box.shape)}")
    weights = torch.ones(box.shape[0], 1, grid, grid, device=box.device)
    for i, (y1, x1, y2, x2) in enumerate(box.detach().double().cpu().tolist()):
        if y1 == y2 or x1 == x2:
            continue

        def span(lo: float, hi: float) -> tuple[int, int]:
            start = max(0, int(torch.tensor((lo - field) / stride).ceil()))
            stop = min(grid - 1, int(torch.tensor((grid - 1) - ((size - field) - hi) / stride).floor())) + 1
            return start, stop

        (r0, r1), (c0, c1) = span(y1, y2), span(x1, x2)
        weights[i, :, r0:r1, c0:c1] = 0.0
    return weights
