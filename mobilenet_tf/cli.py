"""Command line: ``mobilenet-tf list | summary | profile | zoo | export | bench``.

    mobilenet-tf list
    mobilenet-tf summary v3_small --alpha 0.75 --resolution 160
    mobilenet-tf profile v3_large --minimalistic --per-layer
    mobilenet-tf profile v2 --json
    mobilenet-tf zoo          # the README's model zoo table, measured now
    mobilenet-tf export v3_small --alpha 0.75 --weights run/best.weights.h5 --quantize int8 --out v3s.tflite
    mobilenet-tf bench v3_small --backends keras,tflite,tflite-int8 --threads 2 --json
"""

import argparse
import json
import os
import sys


def _model_args(parser):
    parser.add_argument("name", help="model name (see `mobilenet-tf list`)")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNet width multiplier (default 1.0)")
    parser.add_argument("--resolution", type=int, default=224, help="input height = width (default 224)")
    parser.add_argument("--minimalistic", action="store_true", help="V3 only: 3x3, ReLU, no SE")
    parser.add_argument("--classes", type=int, default=1000, help="classes of the top (default 1000)")
    parser.add_argument("--no-top", action="store_true", help="backbone only, without the classifier")


def get_args_parser():
    parser = argparse.ArgumentParser(prog="mobilenet-tf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list model names")
    _model_args(sub.add_parser("summary", help="print the Keras summary of a model"))
    p = sub.add_parser("profile", help="params and multiply-adds of a model")
    _model_args(p)
    p.add_argument("--per-layer", action="store_true", help="one row per layer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("zoo", help="the model zoo table (Markdown), measured")
    p = sub.add_parser("export", help="write a .tflite file (fp32, float16, dynamic or int8)")
    _model_args(p)
    p.add_argument("--weights", help="a .weights.h5 file (default: random weights)")
    p.add_argument("--quantize", default="none", choices=["none", "float16", "dynamic", "int8"])
    p.add_argument("--calibration-images", type=int, default=200,
                   help="int8: synthetic images to calibrate on (default 200)")
    p.add_argument("--out", required=True, help="output .tflite path")
    p = sub.add_parser("bench", help="batch latency on Keras and TFLite backends")
    _model_args(p)
    p.add_argument("--weights", help="a .weights.h5 file (default: random weights)")
    p.add_argument("--backends", default="keras,tflite",
                   help="comma list of keras, tflite, tflite-fp16, tflite-dynamic, tflite-int8")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="TFLite threads (default: TFLite's)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _build(args):
    import mobilenet_tf

    kwargs = dict(input_shape=(args.resolution, args.resolution, 3), include_top=not args.no_top,
                  classes=args.classes)
    if args.alpha != 1.0 or mobilenet_tf.registry.accepts(args.name, "alpha"):
        kwargs["alpha"] = args.alpha  # a family without alpha refuses it by name
    if args.minimalistic:
        kwargs["minimalistic"] = True
    if getattr(args, "weights", None):
        kwargs["weights"] = args.weights
    return mobilenet_tf.build(args.name, **kwargs)


def _export(args):
    from mobilenet_tf import export
    from mobilenet_tf.data import synthetic

    if args.quantize == "int8" and args.calibration_images < 1:
        raise ValueError("`--calibration-images` must be >= 1 for --quantize int8.")
    model = _build(args)
    calibration = None
    if args.quantize == "int8":
        # Representative data: the synthetic classification images at the model's size
        # (pixels in [0, 255], as the models take them with include_preprocessing).
        images = synthetic.synthetic_classification(args.calibration_images, args.resolution, seed=1)
        calibration = images.map(lambda image, label: image[None]).as_numpy_iterator()
    path = export.to_tflite(model, args.out, None if args.quantize == "none" else args.quantize, calibration,
                            calibration_steps=args.calibration_images)
    print(f"{path}: {os.path.getsize(path):,} bytes ({args.quantize})")


def _bench(args):
    from mobilenet_tf import benchmark, profile

    backends = [b for b in args.backends.split(",") if b]
    benchmark.check_backends(backends)
    if args.batch < 1 or args.repeats < 1:
        raise ValueError("`--batch` and `--repeats` must be >= 1.")
    model = _build(args)
    results = benchmark.bench(model, backends, batch=args.batch, threads=args.threads, repeats=args.repeats,
                              madds=profile(model).madds)
    if args.json:
        print(json.dumps({"model": args.name, "batch": args.batch, "threads": args.threads,
                          "resolution": args.resolution, "results": results}, indent=2))
        return
    print(f"{args.name} {args.resolution}x{args.resolution} batch {args.batch}, threads {args.threads}")
    print(f"{'backend':<15} {'median ms':>10} {'p90 ms':>8} {'images/s':>9} {'bytes':>12} {'peak share':>10}")
    for r in results:
        print(f"{r['backend']:<15} {r['latency_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['images_per_second']:>9.1f} "
              f"{r['model_bytes']:>12,} {r['peak_share']:>10.1%}")


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mobilenet_tf import profile, registry, zoo

    try:
        if args.command == "list":
            for name in registry.list_models():
                print(f"{name:<24} {registry.get_entry(name).description}")
        elif args.command == "summary":
            _build(args).summary()
        elif args.command == "profile":
            result = profile(_build(args))
            if args.json:
                print(json.dumps(result.to_dict(per_layer=args.per_layer), indent=2))
            else:
                print(result.table() if args.per_layer else result)
        elif args.command == "zoo":
            print(zoo.zoo_markdown())
        elif args.command == "export":
            _export(args)
        elif args.command == "bench":
            _bench(args)
    except ValueError as error:
        print(f"mobilenet-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
