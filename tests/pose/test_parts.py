import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.draw import polygon as fill_polygon
from skimage.measure import grid_points_in_poly
from skimage.transform import estimate_transform

from pydeform.ops import reference
from pydeform.pose import JOINT, NUM_PARTS, PART_NAMES, at_resolution, part_transforms, torso_scale
from pydeform.pose.parts import affine_tls

SIZE = (128, 128)
IDENTITY = torch.eye(2, 3, dtype=torch.float64)
# Limb parts 2..9: the MASK's end increment `inc` of the original's pose_masks (DESIGN.md
# section 5; AliaksandrSiarohin/pose-gan pose_transform.py: mask_joint(..., 0.1) for upper,
# mask_joint(..., 0.5) for lower limbs), applied from the pushed-back start.
LIMBS = {
    "Rhip-Rkne": 0.1, "Lhip-Lkne": 0.1, "Rkne-Rank": 0.5, "Lkne-Lank": 0.5,
    "Rsho-Relb": 0.1, "Lsho-Lelb": 0.1, "Relb-Rwri": 0.5, "Lelb-Lwri": 0.5,
}  # fmt: skip
# ... and the transform fits' (estimate_join(..., 0.1) / (..., 0.3)).
FIT_INC = {part: 0.1 if inc == 0.1 else 0.3 for part, inc in LIMBS.items()}
HEAD = ("nose", "Leye", "Reye", "Lear", "Rear")


def parts(source, target, size=SIZE):
    return part_transforms(source, target, size, dtype=torch.float64)


def st_of(xy):
    """The torso scale, straight from the formula."""
    r = np.sum((xy[JOINT["Rhip"]] - xy[JOINT["Rsho"]]) ** 2)
    l = np.sum((xy[JOINT["Lhip"]] - xy[JOINT["Lsho"]]) ** 2)
    return math.sqrt((r + l) / 2)


def rectangle(xy, part, st=None, inc=None):
    """A limb's rectangle corners, independently of the library, as the original's
    estimate_polygon builds them: the start pushed back, fr = fr + (fr - to) 0.1, then the
    end extended from that new start, to = to + (to - fr) inc; half width 0.2 st."""
    a, b = (xy[JOINT[n]] for n in part.split("-"))
    st = st_of(xy) if st is None else st
    inc = LIMBS[part] if inc is None else inc
    normal = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a) * 0.2 * st
    start = a + 0.1 * (a - b)
    end = b + inc * (b - start)
    return np.array([start + normal, start - normal, end - normal, end + normal])


def original_limb_mask(xy, part, size, st=None):
    """The original's limb mask: skimage.measure.grid_points_in_poly of the (row, col) polygon."""
    return grid_points_in_poly(size, rectangle(xy, part, st)[:, ::-1])


def original_head_mask(xy, st, size):
    """The original's head mask (mask_from_kp_array of the int centre, border int(0.4 st)):
    rows/cols [c - b, c + b), clipped to the image."""
    present = [JOINT[n] for n in HEAD if (xy[JOINT[n]] != -1).all()]
    cx, cy = xy[present].mean(0).astype(int)
    b = int(0.4 * st)
    mask = np.zeros(size, dtype=bool)
    mask[max(cy - b, 0) : max(min(cy + b, size[0]), 0), max(cx - b, 0) : max(min(cx + b, size[1]), 0)] = True
    return mask


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
    # Head: the half-open box [c - b, c + b), c the int-truncated mean of the head joints,
    # b = int(0.4 st): here c = (60, 22) (mean (60.0, 22.4)), st = 31.76, b = int(12.7) = 12.
    centre = striding[[JOINT[n] for n in HEAD]].mean(0)
    cx, cy, b = int(centre[0]), int(centre[1]), int(0.4 * st)
    assert (cx, cy, b) == (60, 22, 12)
    ys, xs = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    box = (xs >= cx - b) & (xs < cx + b) & (ys >= cy - b) & (ys < cy + b)
    np.testing.assert_array_equal(masks[1].numpy(), box)
    assert masks[1].sum() == (2 * b) ** 2
    for k, part in enumerate(PART_NAMES[2:], start=2):
        want = raster(rectangle(striding, part))
        assert iou(masks[k].numpy() > 0, want) > 0.95, part
        # The original rasterises with grid_points_in_poly: it drops some pixels lying exactly
        # on an edge (here 4 of the 275 of a forearm), pydeform keeps them.
        assert iou(masks[k].numpy() > 0, original_limb_mask(striding, part, SIZE)) > 0.98, part
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


# --- agreement with the original's geometry on many poses -------------------------------


def random_poses(bases, count, size, seed, integer=True):
    """Plausible poses for a (H, W) image: the hand-made 128 x 128 poses `bases`, randomly
    mirrored (a back view), rotated, scaled, shifted and jittered, a few non-torso joints
    missing."""
    rng = np.random.default_rng(seed)
    height, width = size
    poses = []
    for i in range(count):
        xy = bases[i % len(bases)].copy()
        if rng.random() < 0.3:
            xy[:, 0] = 127 - xy[:, 0]
        angle = rng.uniform(-0.3, 0.3)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        scale = np.array([width, height]) / 128 * rng.uniform(0.7, 1.0)
        xy = (xy - 64) @ rotation.T * scale + np.array([width, height]) / 2 + rng.normal(0, 3 * scale, (18, 2))
        xy += rng.normal(0, 2, 2)
        if integer:
            xy = np.round(xy)
        drop = [j for j in range(18) if j not in (2, 5, 8, 11) and rng.random() < 0.1]
        xy[drop] = -1
        poses.append(xy)
    return poses


@pytest.mark.parametrize("size", [(128, 64), (256, 256)])
def test_masks_agree_with_the_original_on_many_poses(size, standing, striding):
    """Limb masks against the original's rasteriser (grid_points_in_poly of its polygon),
    head masks exactly, on 60 random poses: ints as in the published annotation files."""
    ious, float_ious, edge_only = [], [], True
    for integer in (True, False):
        for xy in random_poses([standing, striding], 40, size, seed=size[1], integer=integer):
            _, masks = parts(xy, xy, size)
            st = st_of(xy)
            np.testing.assert_array_equal(masks[1].numpy() > 0, original_head_mask(xy, st, size))
            for k, part in enumerate(PART_NAMES[2:], start=2):
                a, b = (JOINT[n] for n in part.split("-"))
                if (xy[[a, b]] == -1).any():
                    assert masks[k].max() == 0
                    continue
                ours, theirs = masks[k].numpy() > 0, original_limb_mask(xy, part, size)
                (ious if integer else float_ious).append(iou(ours, theirs))
                # Every pixel they disagree on lies on an edge of the rectangle (up to rounding).
                corners = rectangle(xy, part)
                along, across = corners[2] - corners[1], corners[0] - corners[1]
                rows, cols = np.nonzero(ours ^ theirs)
                offset = np.stack([cols, rows], 1) - corners[1]
                u, v = offset @ along / (along @ along), offset @ across / (across @ across)
                edge = np.minimum(np.abs(np.stack([u, v, u - 1, v - 1])).min(0), 1)
                edge_only &= bool((edge < 1e-9).all())
    ious = np.array(ious)
    assert edge_only and min(float_ious) == 1  # float keypoints: no pixel centre on an edge
    # With int keypoints (the published annotation files) whole edges can lie on pixel
    # centres, where the original's crossing rule keeps some and drops others.
    assert np.median(ious) == 1 and ious.mean() > 0.99 and ious.min() > 0.85, (ious.min(), ious.mean())


def test_lower_limb_masks_reach_the_original_length():
    """Shin and forearm masks end 0.55 limb lengths past the joint, upper limbs 0.11: a
    vertical shin from (30, 80) to (30, 100), with an extent of 20 (1 + 0.1 + 0.55) rows."""
    xy = np.full((18, 2), -1.0)
    xy[[JOINT["Rsho"], JOINT["Lsho"]]] = [[30, 30], [40, 30]]
    xy[[JOINT["Rhip"], JOINT["Lhip"]]] = [[30, 60], [40, 60]]  # st = 30, half width 6
    xy[JOINT["Rkne"]], xy[JOINT["Rank"]] = [30, 80], [30, 100]
    _, masks = parts(xy, xy, (128, 64))
    rows = np.nonzero(masks[PART_NAMES.index("Rkne-Rank")].numpy().any(axis=1))[0]
    assert (rows.min(), rows.max()) == (78, 111)  # 80 - 2, 100 + 0.55 * 20
    rows = np.nonzero(masks[PART_NAMES.index("Rhip-Rkne")].numpy().any(axis=1))[0]
    assert (rows.min(), rows.max()) == (58, 82)  # 60 - 2, 80 + 0.11 * 20 = 82.2
    cols = np.nonzero(masks[PART_NAMES.index("Rkne-Rank")].numpy().any(axis=0))[0]
    assert (cols.min(), cols.max()) == (24, 36)


# --- the over-determined fits: scikit-image's estimator ----------------------------------


def ols(target, source):
    """Ordinary least squares affine target -> source, for contrast."""
    design = np.concatenate([target, np.ones((len(target), 1))], axis=1)
    return np.linalg.lstsq(design, source, rcond=None)[0].T


@pytest.mark.parametrize("n", [3, 4, 6, 7])
def test_affine_tls_matches_scikit_image(n):
    rng = np.random.default_rng(n)
    for _ in range(50):
        src = rng.uniform(0, 256, (n, 2))
        dst = src @ rng.normal(0, 1, (2, 2)).T + rng.normal(0, 50, 2) + rng.normal(0, 4, (n, 2))
        want = estimate_transform("affine", src, dst).params
        np.testing.assert_allclose(affine_tls(src, dst), want[:2], atol=1e-7, rtol=1e-9)
    # Nearly collinear points (a side view): still the same, and far from least squares.
    src = np.array([[50.0, 60.0], [51.0, 30.0], [53.0, 31.0], [49.0, 61.0]])
    dst = src + [[3, 1], [0, 2], [1, -2], [2, 2]]
    want = estimate_transform("affine", src, dst).params[:2]
    np.testing.assert_allclose(affine_tls(src, dst), want, atol=1e-7)
    assert np.abs(ols(src, dst) - want).max() > 1


def test_affine_tls_exact_and_failures():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0], [7.0, 9.0]])
    true = np.array([[1.5, 0.2, 3.0], [-0.4, 0.9, -7.0]])
    dst = src @ true[:, :2].T + true[:, 2]
    np.testing.assert_allclose(affine_tls(src, dst), true, atol=1e-9)
    assert affine_tls(np.ones((4, 2)), dst) is None  # coincident source points
    assert affine_tls(src, np.ones((4, 2))) is None  # coincident destination points


@pytest.mark.parametrize("size", [(128, 64), (256, 256)])
def test_torso_and_head_fits_match_scikit_image(size, standing, striding):
    """On random pose pairs with a turned torso (ill-conditioned), theta of torso and head
    equals the original's skimage.transform.estimate_transform('affine', target, source)."""
    poses = random_poses([standing, striding], 40, size, seed=7 + size[0])
    largest_ols_gap = 0.0
    for source, target in zip(poses[::2], poses[1::2]):
        # Turn the target's torso sideways: squeeze the shoulders and hips towards the middle.
        for a, b in [("Rsho", "Lsho"), ("Rhip", "Lhip")]:
            middle = (target[JOINT[a]] + target[JOINT[b]]) / 2
            for n in (a, b):
                target[JOINT[n]] = middle + 0.15 * (target[JOINT[n]] - middle)
        theta, _ = parts(source, target, size)
        torso = [JOINT[n] for n in ("Rhip", "Lhip", "Lsho", "Rsho")]
        want = estimate_transform("affine", target[torso], source[torso]).params[:2]
        np.testing.assert_allclose(theta[0].numpy(), want, atol=1e-6)
        head = [JOINT[n] for n in HEAD if (source[JOINT[n]] != -1).all() and (target[JOINT[n]] != -1).all()]
        points = head + [JOINT["Lsho"], JOINT["Rsho"]]
        want_head = estimate_transform("affine", target[points], source[points]).params[:2]
        np.testing.assert_allclose(theta[1].numpy(), want_head, atol=1e-6)
        # Where the two estimators differ: the source pixel sampled at the target's head centre.
        centre = np.append(target[head].mean(0), 1)
        largest_ols_gap = max(largest_ols_gap, np.abs((ols(target[points], source[points]) - want_head) @ centre).max())
    assert largest_ols_gap > 1  # the test would notice least squares


def test_limb_fits_match_scikit_image(standing, striding):
    """Limb transforms: the original fits its rectangles (inc 0.3 for the lower limbs) with
    the same estimator; the fit does not depend on the end extension."""
    theta, _ = parts(standing, striding)
    for k, part in enumerate(PART_NAMES[2:], start=2):
        src = rectangle(striding, part, inc=FIT_INC[part])
        dst = rectangle(standing, part, inc=FIT_INC[part])
        want = estimate_transform("affine", src, dst).params[:2]
        np.testing.assert_allclose(theta[k].numpy(), want, atol=1e-9)


# --- lower resolutions: corner-aligned (pydeform) vs s*i (the original) -------------------


def encoder_errors(theta, full, level):
    """Median error, in feature pixels, of the low-resolution transform of each rule against
    where the features actually sit. A 4x4, stride-2, padding-1 convolution's output i is
    centred on input 2i + 1/2; after `level` of them (s = 2^level) feature i sits on
    full-size pixel c(i) = s i + (s - 1)/2, so the exact feature-grid transform is
    c^-1 o theta o c. Rules: pydeform's corner-aligned `at_resolution`, and the original's
    x_full = s x_low (AffineTransformLayer divides the translation by s)."""
    s = 2**level
    small = (full[0] // s, full[1] // s)
    ys, xs = np.mgrid[0 : small[0], 0 : small[1]]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 0).astype(np.float64)
    offset = (s - 1) / 2
    to_full = np.array([[s, 0, offset], [0, s, offset], [0, 0, 1.0]])
    errors = {"corner-aligned": [], "original s*i": []}
    masks = torch.ones(len(theta), *full, dtype=torch.float64)
    corner, _ = at_resolution(torch.as_tensor(theta), masks, small)
    for k, t in enumerate(theta):
        full_t = np.vstack([t, [0, 0, 1]])
        exact = (np.linalg.inv(to_full) @ full_t @ to_full)[:2] @ points
        original = np.concatenate([t[:, :2], t[:, 2:] / s], 1) @ points
        ours = corner[k].numpy() @ points
        errors["corner-aligned"].append(np.linalg.norm(ours - exact, axis=0))
        errors["original s*i"].append(np.linalg.norm(original - exact, axis=0))
    return {rule: float(np.median(np.concatenate(e))) for rule, e in errors.items()}


@pytest.mark.parametrize("full", [(128, 64), (256, 256)])
def test_corner_aligned_rule_is_closer_to_the_encoder_geometry(full, standing, striding):
    """Why pydeform keeps its corner-aligned rescaling (a deliberate deviation from the
    original): at every skip level it is closer to where a stride-2 encoder's features sit."""
    poses = random_poses([standing, striding], 16, full, seed=3)
    theta = np.concatenate([parts(a, b, full)[0].numpy() for a, b in zip(poses[::2], poses[1::2])])
    theta = theta[np.abs(theta - np.eye(2, 3)).max(axis=(1, 2)) > 0]  # parts that are present
    for level in (1, 2, 3):
        median = encoder_errors(theta, full, level)
        assert median["corner-aligned"] < median["original s*i"], (level, median)
    # The closed form of the point maps alone: for x_full = c(i), each rule's position of
    # feature i in feature pixels.
    for level in (1, 2, 3):
        s, width = 2**level, full[1]
        i = np.arange(width // s)
        true = (s * i + (s - 1) / 2) / s
        corner = i * (width - 1) / (width // s - 1) / s
        assert np.median(np.abs(corner - true)) < np.median(np.abs(i - true)) == (s - 1) / (2 * s)
