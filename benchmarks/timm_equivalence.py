"""Numerical equivalence of converted timm MobileNetV4 checkpoints (no download needed).

For each variant: a randomly initialised timm model (with random BatchNorm statistics and
layer scales, so no block is near the identity, and BatchNorm statistics gathered on random
batches, so activations keep a trained model's scale) is saved as ``.safetensors``, loaded by
``mobilenet_tf.build(..., weights=file)`` and both run on the same images; prints the
largest absolute logit difference (target < 1e-4), and both float32 runs' distance from
timm's float64 logits (how much of the difference is float32 rounding).

    python benchmarks/timm_equivalence.py                     # torch, timm and TensorFlow in one env
    python benchmarks/timm_equivalence.py --side torch DIR    # where torch + timm are installed
    python benchmarks/timm_equivalence.py --side keras DIR    # then here, with mobilenet_tf

The two-step form is for keeping PyTorch out of the TensorFlow environment: the torch
side writes DIR/<variant>.safetensors, the images and timm's logits; the keras side
reads them.
"""

import argparse
import os

import numpy as np

VARIANTS = ("conv_small", "conv_medium", "conv_large", "hybrid_medium", "hybrid_large")
SIZE = 224


def torch_side(out_dir, variants, seed=0):
    import timm
    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    mean, std = np.array((0.485, 0.456, 0.406)) * 255, np.array((0.229, 0.224, 0.225)) * 255
    x = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).astype("float32"))
    np.save(os.path.join(out_dir, "images.npy"), images)
    for variant in variants:
        model = timm.create_model(f"mobilenetv4_{variant}", pretrained=False, num_classes=1000).eval()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name.endswith("layer_scale.gamma"):
                    tensor.uniform_(0.5, 1.5)
            # BatchNorm statistics of real activations (a cumulative average over a few
            # random batches), so that activations and logits keep a trained model's scale.
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None
            model.train()
            for _ in range(4):
                model(torch.randn(8, 3, SIZE, SIZE))
            model.eval()
            logits = model(x).numpy()
            logits64 = model.double()(x.double()).numpy()  # the float64 reference both float32 runs round from
            model.float()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out_dir, f"{variant}.safetensors"))
        np.save(os.path.join(out_dir, f"{variant}_logits.npy"), logits)
        np.save(os.path.join(out_dir, f"{variant}_logits64.npy"), logits64)
        print(f"timm {variant}: logits {logits.shape}, |max| {np.abs(logits).max():.3f}")


def keras_side(out_dir, variants):
    import mobilenet_tf

    images = np.load(os.path.join(out_dir, "images.npy"))
    worst = 0.0
    for variant in variants:
        model = mobilenet_tf.build(f"v4_{variant}", input_shape=(SIZE, SIZE, 3), classifier_activation=None,
                                   weights=os.path.join(out_dir, f"{variant}.safetensors"))
        ours = np.asarray(model(images, training=False))
        expected = np.load(os.path.join(out_dir, f"{variant}_logits.npy"))
        exact = np.load(os.path.join(out_dir, f"{variant}_logits64.npy"))
        difference = float(np.abs(ours - expected).max())
        worst = max(worst, difference)
        print(f"v4_{variant}: max |ours - timm| = {difference:.2e} (logits up to {np.abs(expected).max():.2f}); "
              f"against timm in float64: ours {np.abs(ours - exact).max():.2e}, "
              f"timm's own float32 {np.abs(expected - exact).max():.2e}")
    print(f"worst: {worst:.2e} ({'<' if worst < 1e-4 else '>='} 1e-4)")
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("torch", "keras"), help="run one side only (see the docstring)")
    parser.add_argument("dir", nargs="?", default="runs/timm_equivalence", help="where the files go")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.side != "keras":
        torch_side(args.dir, variants)
    if args.side != "torch":
        keras_side(args.dir, variants)


if __name__ == "__main__":
    main()
