import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.draw import polygon as fill_polygon

from pydeform.ops import reference
from pydeform.pose import JOINT, NUM_PARTS, PART_NAMES, at_resolution, part_transforms, torso_scale

SIZE = (128, 128)
IDENTITY = torch.eye(2, 3, dtype=torch.float64)
# Limb parts 2..9: (from, to, end extension), as DESIGN.md section 5 states them.
LIMBS = {
    "Rhip-Rkne": 0.1, "Lhip-Lkne": 0.1, "Rkne-Rank": 0.3, "Lkne-Lank": 0.3,
    "Rsho-Relb": 0.1, "Lsho-Lelb": 0.1, "Relb-Rwri": 0.3, "Lelb-Lwri": 0.3,
}  # fmt: skip


def parts(source, target, size=SIZE):
    return part_transforms(source, target, size, dtype=torch.float64)


def st_of(xy):
    """The torso scale, straight from the formula."""
    r = np.sum((xy[JOINT["Rhip"]] - xy[JOINT["Rsho"]]) ** 2)
    l = np.sum((xy[JOINT["Lhip"]] - xy[JOINT["Lsho"]]) ** 2)
    return math.sqrt((r + l) / 2)


def rectangle(xy, part, st=None):
    """A limb's rectangle corners, independently of the library: start pushed back by 0.1
    (from - to), end extended by e (to - from), half width 0.2 st."""
    a, b = (xy[JOINT[n]] for n in part.split("-"))
    st = st_of(xy) if st is None else st
    normal = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a) * 0.2 * st
    start, end = a + 0.1 * (a - b), b + LIMBS[part] * (b - a)
    return np.array([start + normal, start - normal, end - normal, end + normal])


def raster(corners, size=SIZE):
    mask = np.zeros(size, dtype=bool)
    rows, cols = fill_polygon(corners[:, 1], corners[:, 0], size)
    mask[rows, cols] = True
    return mask


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def affine(linear, translation):
    return torch.tensor(np.concatenate([np.asarray(linear, float), np.asarray(translation, float)[:, None]], 1))


def test_torso_scale(standing):
    assert torso_scale(standing).item() == pytest.approx(st_of(standing))
    one_side = standing.copy()
    one_side[JOINT["Lhip"]] = -1
    assert torso_scale(one_side).item() == pytest.approx(np.linalg.norm(standing[8] - standing[2]))
    one_side[JOINT["Rsho"]] = -1
    assert math.isnan(torso_scale(one_side).item())
    batch = torso_scale(np.stack([standing, standing * 2]))
    assert batch.tolist() == pytest.approx([st_of(standing), 2 * st_of(standing)])


def test_same_pose_gives_identity(striding):
    theta, masks = parts(striding, striding)
    assert theta.shape == (NUM_PARTS, 2, 3) and masks.shape == (NUM_PARTS, *SIZE) and len(PART_NAMES) == NUM_PARTS
    assert (masks.flatten(1).amax(1) == 1).all()  # every part present
    torch.testing.assert_close(theta, IDENTITY.expand(NUM_PARTS, 2, 3), atol=1e-9, rtol=0)


@pytest.mark.parametrize("dx, dy", [(7.5, -3.25), (-12.0, 9.0)])
def test_shifted_pose_gives_translation(standing, dx, dy):
    # target = source + (dx, dy), so a target pixel p samples the source at p - (dx, dy).
    theta, _ = parts(standing, standing + [dx, dy])
    want = affine(np.eye(2), [-dx, -dy])
    torch.testing.assert_close(theta, want.expand(NUM_PARTS, 2, 3), atol=1e-9, rtol=0)


def test_shifted_masks_shift(standing):
    _, masks = parts(standing, standing)
    _, shifted = parts(standing, standing + [5, 3])
    # Target-frame masks move with the target pose (the torso's stays all ones).
    torch.testing.assert_close(shifted[1:, 3:, 5:], masks[1:, :-3, :-5])


@pytest.mark.parametrize("scale", [1.5, 0.6])
def test_scaled_pose_gives_scaling(standing, scale):
    centre = np.array([60.0, 50.0])
    target = centre + scale * (standing - centre)
    theta, _ = parts(standing, target)
    # source = centre + (target - centre) / scale
    want = affine(np.eye(2) / scale, centre * (1 - 1 / scale))
    torch.testing.assert_close(theta, want.expand(NUM_PARTS, 2, 3), atol=1e-9, rtol=0)


def test_rotated_pose_gives_rotation(standing):
    angle, centre = 0.3, np.array([64.0, 64.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = centre + (standing - centre) @ rotation.T
    theta, _ = parts(standing, target)
    want = affine(rotation.T, centre - rotation.T @ centre)
    torch.testing.assert_close(theta, want.expand(NUM_PARTS, 2, 3), atol=1e-9, rtol=0)


def test_missing_source_limb_uses_mirrored_limb(standing):
    # The standing pose is left-right symmetric in its torso sides, so moving the source's
    # left hip, shoulder and knee onto the right ones shifted by d keeps st, and the right
    # upper leg (its knee missing in the source) must come from the left one: translation by d.
    d = np.array([16.0, 2.0])
    source = standing.copy()
    source[JOINT["Rkne"]] = -1
    for left, right in [("Lhip", "Rhip"), ("Lsho", "Rsho"), ("Lkne", "Rkne")]:
        source[JOINT[left]] = standing[JOINT[right]] + d
    assert st_of(source) == pytest.approx(st_of(standing))
    theta, masks = parts(source, standing)
    torch.testing.assert_close(theta[2], affine(np.eye(2), d), atol=1e-9, rtol=0)
    assert masks[2].sum() > 0


def test_missing_source_limb_and_mirror_gives_empty_part(standing):
    source = standing.copy()
    source[[JOINT["Rkne"], JOINT["Lkne"]]] = -1  # both upper and lower legs, both sides
    theta, masks = parts(source, standing)
    for k in range(2, 6):
        assert masks[k].abs().max() == 0, PART_NAMES[k]
        torch.testing.assert_close(theta[k], IDENTITY)
    assert (masks[6:].flatten(1).amax(1) == 1).all()  # the arms are untouched


def test_missing_in_target_gives_empty_part(standing, striding):
    target = striding.copy()
    target[JOINT["Lwri"]] = -1
    for name in ("nose", "Leye", "Reye", "Lear", "Rear"):
        target[JOINT[name]] = -1
    theta, masks = parts(standing, target)
    for k in (PART_NAMES.index("head"), PART_NAMES.index("Lelb-Lwri")):
        assert masks[k].abs().max() == 0, PART_NAMES[k]
        torch.testing.assert_close(theta[k], IDENTITY)
    assert (masks[0] == 1).all()  # torso: all ones, always
    others = [k for k in range(NUM_PARTS) if k not in (1, 9)]
    assert (masks[others].flatten(1).amax(1) == 1).all()


def test_masks_match_closed_form(standing, striding):
    _, masks = parts(standing, striding)
    st = st_of(striding)  # masks live in the target frame: the target's scale
    assert (masks[0] == 1).all()
    # Head: the box of +-0.4 st around the mean of the head joints.
    centre = striding[[JOINT[n] for n in ("nose", "Leye", "Reye", "Lear", "Rear")]].mean(0)
    ys, xs = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    box = (np.abs(xs - centre[0]) <= 0.4 * st) & (np.abs(ys - centre[1]) <= 0.4 * st)
    np.testing.assert_array_equal(masks[1].numpy(), box)
    for k, part in enumerate(PART_NAMES[2:], start=2):
        want = raster(rectangle(striding, part))
        assert iou(masks[k].numpy() > 0, want) > 0.95, part
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_warp_moves_each_part_onto_its_target_place(standing, striding):
    """Coloured rectangles, one per limb of the source pose (and the torso quadrilateral),
    warped with the part transforms, land on the target pose's rectangles."""
    theta, masks = parts(standing, striding)
    images, targets = [raster(standing[[8, 11, 5, 2]])], [raster(striding[[8, 11, 5, 2]])]
    for part in PART_NAMES[2:]:
        images.append(raster(rectangle(standing, part)))
        targets.append(raster(rectangle(striding, part)))
    for k, (image, target) in enumerate(zip(images, targets)):
        k = 0 if k == 0 else k + 1  # part index (skip the head)
        x = torch.from_numpy(image).double()[None, None]
        out = reference.multi_affine_warp(x, theta[None, k : k + 1], masks[None, k : k + 1])
        assert iou(out[0, 0].numpy() > 0.5, target) > 0.9, PART_NAMES[k]


def test_warp_moves_the_head(standing):
    # A pure shift: the head box of the source lands on the head box of the target.
    target = standing + [9, 6]
    theta, masks = parts(standing, target)
    _, source_masks = parts(standing, standing)
    x = source_masks[None, 1:2]
    out = reference.multi_affine_warp(x, theta[None, 1:2], masks[None, 1:2])
    torch.testing.assert_close(out[0, 0], masks[1])


def test_degenerate_poses_stay_finite(standing):
    collapsed = np.full((18, 2), 40.0)  # every joint on one point
    side_view = standing.copy()
    side_view[JOINT["Lhip"]], side_view[JOINT["Lsho"]] = side_view[JOINT["Rhip"]], side_view[JOINT["Rsho"]]
    no_torso = standing.copy()
    no_torso[[JOINT["Rhip"], JOINT["Lhip"], JOINT["Rsho"], JOINT["Lsho"]]] = -1
    for source, target in [(standing, collapsed), (collapsed, standing), (collapsed, collapsed),
                           (side_view, standing), (no_torso, no_torso), (standing, no_torso)]:  # fmt: skip
        theta, masks = parts(source, target)
        assert torch.isfinite(theta).all() and torch.isfinite(masks).all()
    # Collinear torso points (a side view) cannot fix an affine map: a similarity fit still
    # recovers a shift exactly.
    theta, _ = parts(side_view, side_view + [3, -4])
    torch.testing.assert_close(theta[0], affine(np.eye(2), [-3, 4]), atol=1e-9, rtol=0)
    # No torso joints in common: the torso falls back to the identity, masks stay ones.
    theta, masks = parts(no_torso, standing)
    torch.testing.assert_close(theta[0], IDENTITY)
    assert (masks[0] == 1).all()


coordinates = arrays(np.float64, (18, 2), elements=st.sampled_from([-1.0, 0.0, 5.0, 10.5, 20.0, 31.0]))


@settings(max_examples=40, deadline=None, database=None)
@given(source=coordinates, target=coordinates)
def test_random_poses_are_finite_and_self_identity(source, target):
    theta, masks = parts(source, target, (32, 32))
    assert torch.isfinite(theta).all()
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and (masks[0] == 1).all()
    empty = masks.flatten(1).amax(1) == 0
    torch.testing.assert_close(theta[empty], IDENTITY.expand(int(empty.sum()), 2, 3))
    theta, masks = parts(target, target, (32, 32))
    torch.testing.assert_close(theta, IDENTITY.expand(NUM_PARTS, 2, 3), atol=1e-6, rtol=0)


def test_batch_matches_single_and_follows_device_dtype(standing, striding):
    source = torch.tensor(np.stack([standing, striding]))
    target = torch.tensor(np.stack([striding, standing + 3]))
    theta, masks = part_transforms(source, target, SIZE)
    assert theta.shape == (2, NUM_PARTS, 2, 3) and masks.shape == (2, NUM_PARTS, *SIZE)
    assert theta.dtype == masks.dtype == torch.float32
    for b in range(2):
        single_theta, single_masks = part_transforms(source[b], target[b], SIZE)
        torch.testing.assert_close(theta[b], single_theta)
        torch.testing.assert_close(masks[b], single_masks)


def test_part_transforms_validation(standing):
    with pytest.raises(ValueError, match="source and target"):
        part_transforms(np.stack([standing, standing]), standing, SIZE)
    with pytest.raises(ValueError, match="source must have shape"):
        part_transforms(standing[:17], standing, SIZE)
    with pytest.raises(TypeError, match="target must be"):
        part_transforms(standing, None, SIZE)
    with pytest.raises(TypeError, match="size"):
        part_transforms(standing, standing, 128)
    with pytest.raises(TypeError, match="dtype"):
        part_transforms(standing, standing, SIZE, dtype=torch.int64)


# --- at_resolution ----------------------------------------------------------------------


def ramp(size):
    """An image linear in (x, y): bilinear sampling reproduces it exactly at any resolution."""
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    return (1 + 0.01 * xs + 0.02 * ys).double()[None, None]


@pytest.mark.parametrize("step", [2, 4])
@pytest.mark.parametrize(
    "theta",
    [
        [[1.0, 0.0, 8.0], [0.0, 1.0, -4.0]],  # translation by a multiple of 4 px
        [[0.5, 0.0, 16.0], [0.0, 0.5, 16.0]],  # 2x zoom about (32, 32)
        [[0.75, 0.0, 4.0], [0.0, 0.5, 20.0]],  # anisotropic scale
    ],
)
def test_warp_at_low_resolution_equals_downsampled_warp(theta, step):
    """Full size 65 x 65; with step s the feature map is 64/s + 1 pixels a side and its pixel
    i sits on full-size pixel s i (corners aligned): warping there with the rescaled
    transform must equal every s-th pixel of the full-size warp."""
    full = (65, 65)
    small = (64 // step + 1, 64 // step + 1)
    theta = torch.tensor(theta, dtype=torch.float64)[None, None]
    mask = (torch.rand(1, 1, *full) > 0.3).double()
    image = ramp(full)
    small_theta, small_mask = at_resolution(theta, mask, small)
    torch.testing.assert_close(small_mask, mask[..., ::step, ::step])
    out_full = reference.multi_affine_warp(image, theta, mask)
    out_small = reference.multi_affine_warp(image[..., ::step, ::step], small_theta, small_mask)
    torch.testing.assert_close(out_small, out_full[..., ::step, ::step])


def test_at_resolution_closed_form_and_non_square():
    theta = torch.tensor([[2.0, 3.0, 5.0], [7.0, 11.0, 13.0]], dtype=torch.float64)
    masks = torch.zeros(1, 128, 64)
    masks[0, 127, 63] = 1
    new_theta, new_masks = at_resolution(theta[None], masks, (64, 32))
    sx, sy = 31 / 63, 63 / 127  # (W' - 1) / (W - 1), (H' - 1) / (H - 1)
    want = torch.tensor([[2.0, 3.0 * sx / sy, 5.0 * sx], [7.0 * sy / sx, 11.0, 13.0 * sy]], dtype=torch.float64)
    torch.testing.assert_close(new_theta[0], want)
    assert new_masks.shape == (1, 64, 32) and new_masks[0, 63, 31] == 1 and new_masks.sum() == 1
    # A one-pixel side: only coordinate 0 exists there.
    theta_1, masks_1 = at_resolution(theta[None], masks, (1, 1))
    assert torch.isfinite(theta_1).all() and masks_1.shape == (1, 1, 1)


def test_at_resolution_matches_rescaled_keypoints(standing, striding):
    """Rescaling the transforms equals fitting on rescaled keypoints (the fits are
    equivariant), and the rescaled masks overlap the masks drawn at the low resolution."""
    full, small = (129, 129), (65, 65)
    theta, masks = parts(standing, striding, full)
    small_theta, small_masks = at_resolution(theta[None], masks[None], small)
    want_theta, want_masks = parts(standing / 2, striding / 2, small)
    torch.testing.assert_close(small_theta[0], want_theta, atol=1e-9, rtol=0)
    for k in range(NUM_PARTS):
        assert iou(small_masks[0, k].numpy() > 0, want_masks[k].numpy() > 0) > 0.95, PART_NAMES[k]


def test_at_resolution_keeps_gradient_and_validates():
    theta = torch.randn(2, NUM_PARTS, 2, 3, dtype=torch.float64, requires_grad=True)
    masks = torch.ones(2, NUM_PARTS, 33, 17, dtype=torch.float64)
    torch.autograd.gradcheck(lambda t: at_resolution(t, masks, (9, 5))[0], (theta,))
    with pytest.raises(ValueError, match="theta must have shape"):
        at_resolution(theta[..., :2], masks, (9, 5))
    with pytest.raises(ValueError, match="masks must have shape"):
        at_resolution(theta, masks[:1], (9, 5))
    with pytest.raises(TypeError, match="masks"):
        at_resolution(theta, masks.numpy(), (9, 5))
    with pytest.raises(ValueError, match="size"):
        at_resolution(theta, masks, (0, 5))
    with pytest.raises(ValueError, match="1 pixel"):
        at_resolution(theta[..., :1, :, :], masks[:, :1, :1], (4, 4))
