"""``amr profile [NAME]``: which budget preset params.yaml holds, or write one into it."""
from __future__ import annotations

HELP = ("Budget presets (widths, epochs, learning rates, batch size, CPU threads and kernels): "
        "without NAME, show which preset params.yaml's values are; with NAME (paper, demo or a "
        "YAML file of key: value), write it into params.yaml, or print it as `-S` arguments for "
        "`dvc exp run` (--set-args).")


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="paper, demo or a preset YAML file")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--set-args", action="store_true",
                        help="print `-S key=value` arguments instead of writing params.yaml, "
                             "e.g. dvc exp run $(amr profile paper --set-args)")


def run(args) -> int:
    from amr.config import presets as profiles
    from amr.config.params import Params

    if args.name is None:
        params = Params.load(args.params)
        presets = {name: profiles.load_preset(name) for name in profiles.PRESET_NAMES}
        print(f"{args.params}: {profiles.budget_label(params)}")
        width = max(len(k) for k in presets["paper"])
        print(f"{'key':<{width}}  {'params.yaml':>12}" + "".join(f"  {n:>12}" for n in presets))
        for key in presets["paper"]:
            cells = [profiles.format_value(params.value(key))] + \
                    [profiles.format_value(p[key]) for p in presets.values()]
            print(f"{key:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
        return 0
    preset = profiles.load_preset(args.name)
    if args.set_args:
        print(" ".join(profiles.set_args(preset)))
        return 0
    changed = profiles.write_preset(args.params, preset)
    Params.load(args.params)  # the result must load
    print(f"{args.params}: preset {args.name} written ({len(changed)} value(s) changed"
          + (f": {', '.join(changed)}" if changed else "") + ")")
    return 0
