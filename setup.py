from setuptools import find_packages, setup

setup(
    name="mobilenet_tf",
    version="0.1.0",
    description="MobileNet V1/V2/V3 for Keras 3 with SSDLite, LR-ASPP, FaceNet heads, "
                "compression and TFLite export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # heads/ is installed as mobilenet_tf.heads (heads/segmentation -> mobilenet_tf.heads.segmentation, ...).
    packages=find_packages(include=["mobilenet_tf", "mobilenet_tf.*"])
    + ["mobilenet_tf.heads"] + [f"mobilenet_tf.heads.{p}" for p in find_packages("heads")],
    package_dir={"mobilenet_tf": "mobilenet_tf", "mobilenet_tf.heads": "heads"},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "tf_keras",
        "tensorflow-model-optimization",
        "tensorflow-datasets",
        # tensorflow-datasets 4.9.10 imports importlib_resources to prepare any dataset but
        # declares it only for Python < 3.9, and etils >= 1.15 no longer brings it.
        "importlib_resources",
        "tensorboard",
        "pycocotools",
        "matplotlib",
        "numpy",
        "safetensors",  # timm checkpoints (MobileNetV4 weights), read without PyTorch
    ],
    # LiteRT: the maintained TFLite interpreter (tf.lite.Interpreter is deprecated); used where installed.
    # ONNX: tf2onnx + ONNX Runtime, the peer deployment path benchmarks/deploy.py times beside TFLite.
    extras_require={"litert": ["ai-edge-litert"], "onnx": ["tf2onnx", "onnxruntime"],
                    "test": ["pytest", "pytest-xdist", "ai-edge-litert", "tf2onnx", "onnxruntime"]},
    entry_points={"console_scripts": ["mobilenet-tf=mobilenet_tf.cli:main"]},
)
