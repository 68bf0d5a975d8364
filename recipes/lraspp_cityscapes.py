"""The segmentation recipe under its first name: ``python recipes/lraspp_cityscapes.py [flags]``
runs ``recipes/segmentation.py`` with the same flags (LR-ASPP is its default head)."""

import os
import runpy

if __name__ == "__main__":
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "segmentation.py"), run_name="__main__")
