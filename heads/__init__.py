"""Task heads on MobileNet backbones (``mobilenet_tf.heads``).

One sub-package per paper task: ``ssdlite`` (detection), ``lraspp``
(segmentation), ``facenet`` (face embeddings). Installed from the top-level
``heads/`` folder as ``mobilenet_tf.heads`` (see setup.py).
"""
