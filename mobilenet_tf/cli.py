"""Command line: ``mobilenet-tf list | summary | profile | zoo``.

    mobilenet-tf list
    mobilenet-tf summary v3_small --alpha 0.75 --resolution 160
    mobilenet-tf profile v3_large --minimalistic --per-layer
    mobilenet-tf profile v2 --json
    mobilenet-tf zoo          # the README's model zoo table, measured now
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
    return parser


def _build(args):
    import mobilenet_tf

    kwargs = dict(input_shape=(args.resolution, args.resolution, 3), include_top=not args.no_top,
                  classes=args.classes)
    if args.alpha != 1.0 or mobilenet_tf.registry.accepts(args.name, "alpha"):
        kwargs["alpha"] = args.alpha  # a family without alpha refuses it by name
    if args.minimalistic:
        kwargs["minimalistic"] = True
    return mobilenet_tf.build(args.name, **kwargs)


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
    except ValueError as error:
        print(f"mobilenet-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
