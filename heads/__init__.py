"""Task heads on MobileNet backbones (``mobilenet_tf.heads``).

One sub-package per paper task: ``ssdlite`` and ``faster_rcnn`` (detection), ``segmentation``
(LR-ASPP, R-ASPP, DeepLabv3 ASPP), ``facenet`` (face embeddings). Installed from the top-level
``heads/`` folder as ``mobilenet_tf.heads`` (see setup.py).
"""
