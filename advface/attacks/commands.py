"""``advface attack NAME ...`` and ``advface attack sweep NAME ...``: the pixel attacks' command line.

Registered by :mod:`advface.cli`; the work is done by :mod:`advface.attacks.workflow`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  advface attack pgd --model dlib-resnet --goal dodge --images data/samples/obama.jpg --epsilon 4/255
  advface attack pgd --goal impersonate --images data/samples/obama*.jpg \\
      --targets data/samples/biden.jpg --epsilon 8/255 --out runs/pgd-imp
  advface attack square --goal misidentify --images probes/ --gallery people/ --queries 2000
  advface attack cw --images data/samples/obama.jpg --mask eyeglasses --out runs/cw-glasses"""

SWEEP_EXAMPLES = """examples:
  advface attack sweep pgd --images data/samples/ --epsilons 1/255,2/255,4/255,8/255
  advface attack sweep fgsm --images data/samples/ --epsilons 0.5/255,1/255,2/255 --norm linf --out runs/f"""

# Hyperparameter flags: (flag, attack keyword, type, help). Only those given are passed; an attack that
# does not take one says so.
HYPERPARAMETERS = [
    ("--norm", "norm", str, "linf or l2"),
    ("--steps", "steps", int, "iterations (per restart / per binary-search round)"),
    ("--step-size", "step_size", "fraction", "step length in the norm, e.g. 1/255"),
    ("--restarts", "restarts", int, "pgd, apgd: random restarts (the best is kept)"),
    ("--loss", "loss", str, "auto, distance, ce, margin or dlr"),
    ("--batch-size", "batch_size", int, "images attacked together (default: 32)"),
    ("--decay", "decay", float, "mifgsm: momentum factor"),
    ("--diversity-prob", "diversity_prob", float, "mifgsm: input-diversity probability (DI)"),
    ("--ti-kernel", "ti_kernel", int, "mifgsm: translation-invariance kernel size (TI, odd)"),
    ("--binary-search-steps", "binary_search_steps", int, "cw: rounds of the search over c"),
    ("--initial-const", "initial_const", float, "cw: first c"),
    ("--confidence", "confidence", float, "cw: margin beyond the decision boundary (kappa)"),
    ("--learning-rate", "learning_rate", float, "cw: Adam learning rate"),
    ("--overshoot", "overshoot", float, "deepfool: overshoot"),
    ("--candidates", "candidates", int, "deepfool: classes or identities considered per step"),
    ("--rho", "rho", float, "apgd: step-halving threshold"),
    ("--queries", "queries", int, "square: query budget per image"),
    ("--p-init", "p_init", float, "square: initial fraction of pixels per square"),
]


def _fraction(text: str | None) -> float | None:
    """``8/255`` or ``0.03`` (parsed after argparse, so a bad value is a one-line advface error)."""
    from advface.attacks.pixel import parse_epsilon

    return None if text is None else parse_epsilon(text)


def _add_common(q: argparse.ArgumentParser, sweep: bool) -> None:
    q.add_argument("--model", default="dlib-resnet", help="zoo model (default: dlib-resnet)")
    q.add_argument(
        "--goal",
        default="dodge",
        choices=["dodge", "impersonate", "misidentify"],
        help="dodge (not recognised), impersonate (taken for --targets), misidentify (1:N, --gallery)",
    )
    q.add_argument("--images", nargs="+", required=True, type=Path, help="photos or folders to attack")
    q.add_argument("--targets", nargs="+", default=[], help="impersonate: photos of the target person")
    q.add_argument(
        "--references",
        nargs="+",
        default=[],
        help="dodge: enrolment photos of the attacker (default: each photo's own clean embedding)",
    )
    q.add_argument("--gallery", help="misidentify: folder with one sub-folder per person (or name[N].jpg)")
    q.add_argument("--open-set", action="store_true", help="misidentify: rejection as unknown counts too")
    q.add_argument("--threshold", type=float, help="override the model's threshold")
    q.add_argument("--true-class", help="classifiers: the attacker's class (default: the clean prediction)")
    q.add_argument("--target-class", help="classifiers: the class to impersonate")
    q.add_argument(
        "--mask",
        help="perturb only a region: eyeglasses, forehead, sticker, or a mask image (white = may change)",
    )
    if sweep:
        q.add_argument(
            "--epsilons",
            required=True,
            help="comma-separated budgets, e.g. 1/255,2/255,4/255,8/255",
        )
    else:
        q.add_argument("--epsilon", help="budget in the norm, e.g. 8/255 (default: the attack's)")
    for flag, _, kind, help_ in HYPERPARAMETERS:
        q.add_argument(flag, type=str if kind == "fraction" else kind, help=help_)
    from advface.cli import _add_alignment_flags

    _add_alignment_flags(q)
    q.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    q.add_argument("--out", type=Path, help="run folder; re-run to resume (default: runs/attack-NAME-GOAL)")
    q.add_argument("--json", action="store_true", help="print summary.json")


def add_parser(command) -> None:
    """Register ``advface attack`` on the main parser (``command(name, help)`` makes a subparser)."""
    from advface.attacks import ATTACKS

    p = command("attack", "Pixel attacks (FGSM, BIM, PGD, MI-FGSM, C&W, DeepFool, APGD, Square) on photos")
    p.epilog = EXAMPLES + "\n" + SWEEP_EXAMPLES.split("\n", 1)[1]
    verbs = p.add_subparsers(dest="attack_name", required=True, metavar="NAME")
    for name in ATTACKS:
        q = verbs.add_parser(
            name,
            help=f"run {name} on photos into a run folder",
            description=f"Attack photos with {name}: align each face, perturb its chip within the budget, "
            "judge it with a fresh forward pass (also after 8-bit rounding), write config.json, "
            "results.tsv (one row per photo, flushed as it goes), images and plots. Re-run the same "
            "command to resume.",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common(q, sweep=False)
        q.set_defaults(run=_cmd_run, attack=name)
    q = verbs.add_parser(
        "sweep",
        help="success rate against epsilon, and each photo's smallest successful budget",
        description="Run one attack at several budgets on the same photos: curve.tsv/curve.png "
        "(success rate against epsilon), minimal.tsv (smallest budget per photo) and summary.json. "
        "Re-run the same command to resume.",
        epilog=SWEEP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("attack", choices=list(ATTACKS), help="the attack")
    _add_common(q, sweep=True)
    q.set_defaults(run=_cmd_run)


def _settings(args) -> dict:
    values = {}
    for flag, keyword, kind, _ in HYPERPARAMETERS:
        value = getattr(args, flag[2:].replace("-", "_"))
        values[keyword] = _fraction(value) if kind == "fraction" else value
    return values


def _goal(args):
    from advface.attacks.workflow import GoalSpec

    return GoalSpec(
        goal=args.goal,
        references=tuple(args.references),
        targets=tuple(args.targets),
        gallery=args.gallery,
        threshold=args.threshold,
        open_set=args.open_set,
        true_class=args.true_class,
        target_class=args.target_class,
    )


def _arguments(args) -> dict:
    skip = {"run", "json", "out"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip} | {
        "images": [str(p) for p in args.images]
    }


def _cmd_run(args) -> int:
    from advface import cli
    from advface.attacks import make_attack
    from advface.attacks.pixel import parse_epsilon
    from advface.attacks.workflow import run_pixel_attack, run_sweep

    settings = _settings(args)
    common = dict(
        model=args.model,
        images=args.images,
        goal=_goal(args),
        mask=args.mask,
        seed=args.seed,
        aligner=cli._aligner(args),
        arguments=_arguments(args),
    )
    if args.attack_name == "sweep":
        out = args.out or Path("runs") / f"sweep-{args.attack}-{args.goal}"
        run = run_sweep(
            out,
            make_attack=lambda eps: make_attack(args.attack, epsilon=eps, **settings),
            epsilons=[parse_epsilon(e.strip()) for e in args.epsilons.split(",") if e.strip()],
            progress=cli._progress_bar("sweep"),
            **common,
        )
    else:
        out = args.out or Path("runs") / f"attack-{args.attack}-{args.goal}"
        attack = make_attack(args.attack, epsilon=_fraction(args.epsilon), **settings)
        run = run_pixel_attack(out, attack=attack, progress=cli._progress_bar("attack"), **common)
    cli._emit(args, run.summary, describe(run.summary, out))
    return 0


def describe(summary: dict, out: Path) -> str:
    """A few lines a person reads."""
    s = summary
    head = f"{s['attack']} {s['goal']} on {s['model']} ({s['norm']}"
    if "success_rates" in s:
        lines = [head + ")"]
        for eps, rate in zip(s["epsilons"], s["success_rates"], strict=True):
            lines.append(f"  epsilon {eps * 255:6.3g}/255: success {rate:.0%}")
        m = s.get("median_minimal_epsilon")
        lines.append(
            f"  median minimal epsilon: {m * 255:.3g}/255" if m else "  median minimal epsilon: not reached"
        )
    else:
        eps = s.get("epsilon")
        head += f", epsilon {eps * 255:.3g}/255)" if eps else ")"
        if not s.get("attacked"):
            return head + f": no photo could be attacked; see {out / 'results.tsv'}"
        lines = [
            head,
            f"  success {s['success_rate']:.0%} of {s['attacked']} (after 8-bit rounding "
            f"{s['success_rate_8bit']:.0%}; clean {s['clean_success_rate']:.0%})",
            f"  mean score {s['mean_clean_score']:.4f} -> {s['mean_score']:.4f}"
            + (f" (threshold {s['threshold']:g})" if s.get("threshold") is not None else ""),
        ]
        if s.get("median_linf_successful") is not None:
            lines.append(
                f"  median perturbation of successes: Linf {s['median_linf_successful'] * 255:.3g}/255, "
                f"L2 {s['median_l2_successful']:.4g}"
            )
        for name, status in s.get("skipped", {}).items():
            lines.append(f"  skipped {name}: {status}")
    lines += [f"  warning: {flag}" for flag in s.get("flags", []) + s.get("monotone_flags", [])]
    lines.append(f"run folder: {out}")
    return "\n".join(lines)
