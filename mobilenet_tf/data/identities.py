"""Procedurally generated identities for face-embedding training (no download).

An identity is a fixed random structure: ``BLOB_PAIRS`` pairs of coloured,
elongated Gaussian blobs (position, size, elongation, angle, colour), each pair
mirrored about the vertical axis as a face's features are, on a head-shaped
ellipse of the identity's own tone. The symmetry keeps horizontal flips (a face
augmentation) from turning an identity into another. Every image of an identity redraws the nuisances a face
photo has: pose (rotation, scale, shift), lighting (brightness, contrast, a
colour cast), a background level and pixel noise. Two images of one identity
therefore differ more in pixels than two identities do in structure, which is
what an embedding must learn to see through; train and evaluation identities
come from different seeds, so verification measures generalisation to unseen
identities, as LFW does.
"""

import numpy as np

BLOB_PAIRS = 4
# Nuisances drawn per image (the identity's structure never changes).
ROTATION_DEGREES = 12.0
SCALE_RANGE = (0.88, 1.12)
SHIFT = 0.08
BRIGHTNESS = 0.25
CONTRAST_RANGE = (0.7, 1.3)
COLOUR_CAST = 0.12
NOISE = 0.08


def identity_structures(num_identities, seed):
    """Random structures of ``num_identities`` identities: a dict of arrays."""
    rng = np.random.default_rng(seed)
    n, b = num_identities, BLOB_PAIRS
    centres = rng.uniform(-0.5, 0.5, (n, b, 2))
    angles = rng.uniform(0.0, np.pi, (n, b))
    mirror = lambda a, b_: np.concatenate([a, b_], axis=1)  # noqa: E731  (blob, its mirror image)
    sigmas = rng.uniform(0.07, 0.2, (n, b, 1)) * rng.uniform(0.6, 1.6, (n, b, 2))
    colours = rng.uniform(-1.0, 1.0, (n, b, 3))
    return dict(
        centres=mirror(centres, centres * np.array([-1.0, 1.0])),  # (x, y) -> (-x, y)
        sigmas=mirror(sigmas, sigmas),
        angles=mirror(angles, np.pi - angles),
        colours=mirror(colours, colours),
        tone=rng.uniform(-0.4, 0.4, (n, 3)),
    )


def render(structures, identity_ids, image_size, seed):
    """Images of the given identities, each with its own random nuisances.

    Args:
        structures: from ``identity_structures``.
        identity_ids: (N,) int indices into ``structures``.
        image_size: side S of the square images.
        seed: seeds the per-image nuisances.

    Returns:
        (N, S, S, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(identity_ids)
    n = len(ids)
    coords = (np.arange(image_size) + 0.5) / image_size * 2.0 - 1.0
    gy, gx = np.meshgrid(coords, coords, indexing="ij")  # (S, S) in [-1, 1]
    theta = np.deg2rad(rng.normal(0.0, ROTATION_DEGREES / 2, n))
    scale = rng.uniform(*SCALE_RANGE, n)
    shift = rng.uniform(-SHIFT, SHIFT, (n, 2))
    # Inverse pose: canonical coordinates of every pixel, (N, S, S).
    x, y = gx[None] - shift[:, 0, None, None], gy[None] - shift[:, 1, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (cos * x + sin * y) / scale[:, None, None]
    v = (-sin * x + cos * y) / scale[:, None, None]
    head = 1.0 / (1.0 + np.exp(12.0 * ((u / 0.7) ** 2 + (v / 0.85) ** 2 - 1.0)))  # soft ellipse
    image = head[..., None] * (0.3 + structures["tone"][ids][:, None, None, :])
    for b in range(structures["centres"].shape[1]):
        centre = structures["centres"][ids, b]
        angle = structures["angles"][ids, b][:, None, None]
        sigma = structures["sigmas"][ids, b]
        du, dv = u - centre[:, 0, None, None], v - centre[:, 1, None, None]
        a = (np.cos(angle) * du + np.sin(angle) * dv) / sigma[:, 0, None, None]
        c = (-np.sin(angle) * du + np.cos(angle) * dv) / sigma[:, 1, None, None]
        image += np.exp(-0.5 * (a ** 2 + c ** 2))[..., None] * structures["colours"][ids, b][:, None, None, :]
    background = rng.uniform(-0.6, 0.6, (n, 1, 1, 1))
    image = image + (1.0 - head[..., None]) * background
    image = image * rng.uniform(*CONTRAST_RANGE, (n, 1, 1, 1)) + rng.uniform(-BRIGHTNESS, BRIGHTNESS, (n, 1, 1, 1))
    image += rng.uniform(-COLOUR_CAST, COLOUR_CAST, (n, 1, 1, 3))
    image += rng.normal(0.0, NOISE, image.shape)
    return np.clip((image * 0.5 + 0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def synthetic_identities(num_identities, images_per_identity, image_size=64, seed=0, chunk=256):
    """A face-like dataset: ``images_per_identity`` images of each identity.

    Returns:
        (images (N, S, S, 3) uint8, labels (N,) int32 in [0, num_identities)),
        N = num_identities * images_per_identity, sorted by identity.
    """
    structures = identity_structures(num_identities, seed)
    labels = np.repeat(np.arange(num_identities, dtype=np.int32), images_per_identity)
    parts = [render(structures, labels[i:i + chunk], image_size, seed=(seed, i)) for i in range(0, len(labels), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, image_size, image_size, 3), np.uint8), labels
