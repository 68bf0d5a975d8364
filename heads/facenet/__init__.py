"""FaceNet-style face embeddings distilled into MobileNets (V1 paper 4.7, Table 14).

    >>> from mobilenet_tf.heads import facenet
    >>> student = facenet.build_embedding_model(backbone="v1", alpha=1.0, input_size=160, embedding_dim=128)
    >>> emb = student.predict(faces)          # (N, 128), unit norm
    >>> facenet.verify(student, pairs)        # accuracy, VAL@FAR, ROC (LFW 10-fold protocol)
"""

from mobilenet_tf.heads.facenet import data, losses, verification  # noqa: F401
from mobilenet_tf.heads.facenet.gallery import Gallery  # noqa: F401
from mobilenet_tf.heads.facenet.losses import (  # noqa: F401
    FaceNetLoss, batch_hard_triplet_loss, distillation_loss, semi_hard_triplet_loss)
from mobilenet_tf.heads.facenet.model import build_embedding_model, build_teacher  # noqa: F401
from mobilenet_tf.heads.facenet.verification import verify  # noqa: F401
