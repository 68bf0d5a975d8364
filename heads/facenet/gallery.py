"""A small face gallery: enrol named embeddings, search by cosine similarity.

    >>> gallery = Gallery(student)                 # or Gallery() and add embeddings
    >>> gallery.add(["ada", "ada", "bob"], faces)  # images or (N, D) embeddings
    >>> gallery.query(probe_faces, k=3)            # [[("ada", 0.93), ("bob", 0.41), ...], ...]
    >>> gallery.identify(probe_faces, threshold=0.6)  # ["ada", "unknown", ...]

Cosine similarity ``a . b / (||a|| ||b||)`` computed from the vectors, whatever
their norm (each is divided by its norm when it enters; a zero vector has cosine
0 with everything); brute force (a matrix product), fine for tens of thousands
of faces. ``save`` / ``load`` keep it as an ``.npz``.
"""

import numpy as np

UNKNOWN = "unknown"


class Gallery:
    """Named embeddings with top-k cosine search.

    Args:
        model: optional embedding model; then ``add`` / ``query`` also take images
            (N, S, S, 3) in [0, 255].
    """

    def __init__(self, model=None, embedding_dim=None):
        self.model = model
        self.names = []
        self.embeddings = np.zeros((0, embedding_dim or 0), np.float32)

    def __len__(self):
        return len(self.names)

    def _embeddings(self, items):
        items = np.asarray(items, np.float32)
        if items.ndim == 4:
            if self.model is None:
                raise ValueError("images need a Gallery(model); pass (N, D) embeddings otherwise.")
            from mobilenet_tf.heads.facenet import verification

            items = verification.embed(self.model, items)
        if items.ndim != 2:
            raise ValueError(f"expected (N, D) embeddings or (N, S, S, 3) images; got shape {items.shape}.")
        if len(self.names) and items.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"embeddings have {items.shape[1]} dims; the gallery holds {self.embeddings.shape[1]}.")
        return _unit(items)

    def add(self, names, items):
        """Enrol ``items`` (images or embeddings) under ``names`` (one name per item)."""
        names = [names] if isinstance(names, str) else list(names)
        embeddings = self._embeddings(items)
        if len(names) != len(embeddings):
            raise ValueError(f"got {len(names)} names for {len(embeddings)} faces.")
        self.embeddings = embeddings if not len(self.names) else np.concatenate([self.embeddings, embeddings])
        self.names += names
        return self

    def query(self, items, k=5):
        """For each probe, the ``k`` most similar *identities*: [(name, cosine), ...],
        best first; an identity with several enrolled faces counts its best one."""
        if not self.names:
            raise ValueError("the gallery is empty: add faces first.")
        similarity = self._embeddings(items) @ self.embeddings.T  # (Q, G)
        results = []
        for row in similarity:
            best = {}
            for index in np.argsort(-row):
                best.setdefault(self.names[index], float(row[index]))
                if len(best) == k:
                    break
            results.append(list(best.items()))
        return results

    def identify(self, items, threshold):
        """The best identity per probe, or ``UNKNOWN`` when its cosine similarity is below
        ``threshold`` (in [-1, 1])."""
        return [top[0][0] if top[0][1] >= threshold else UNKNOWN for top in self.query(items, k=1)]

    def save(self, path):
        np.savez(path, names=np.asarray(self.names), embeddings=self.embeddings)

    @classmethod
    def load(cls, path, model=None):
        stored = np.load(path)
        gallery = cls(model)
        gallery.names = [str(n) for n in stored["names"]]
        gallery.embeddings = _unit(np.asarray(stored["embeddings"], np.float32))
        return gallery


def _unit(vectors):
    """(N, D) ``vectors`` / their L2 norms, in float64 so that tiny or huge vectors
    keep their direction; zero vectors stay zero."""
    vectors = np.asarray(vectors, np.float64)
    scale = np.max(np.abs(vectors), axis=1, keepdims=True)
    vectors = vectors / np.where(scale > 0, scale, 1.0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
