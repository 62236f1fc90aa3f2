"""`oneword serve`: the gallery where a person rates candidates and breeds new ones."""

from __future__ import annotations

import argparse

from ..errors import OnewordError
from ..search.embedding_ops import CROSSOVERS, SELECTIONS
from .options import add_device_options, add_project_option, add_scoring_options, score_settings
from .vocabulary import add_image_seed_option


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="web gallery: rate candidates, breed the next generation",
        description="Serve a web gallery of the project's runs: each "
        "candidate's images and scores; rate them 1-5 or mark "
        "favourites (mouse or keyboard); breed the next generation "
        "from your ratings and mix candidates, drawn in the "
        "background (the children trained on first with --train-steps); "
        "lineage of each candidate.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the gallery answers to (e.g. this machine's name on the LAN, "
        "with --host 0.0.0.0); repeatable. Other Host names are refused (DNS rebinding)",
    )
    p.add_argument("--population", type=int, default=8, help="children per generation")
    p.add_argument(
        "--selection", choices=SELECTIONS, default="tournament", help="how parents are picked"
    )
    p.add_argument(
        "--crossover", choices=CROSSOVERS, default="blend", help="how two parents combine"
    )
    p.add_argument(
        "--mutation",
        type=float,
        default=0.1,
        help="Gaussian mutation in vocabulary standard deviations",
    )
    p.add_argument("--elites", type=int, default=1, help="best parents kept as they are (1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the breeding (default 0)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="train each bred generation's children this many more steps from their bred rows, "
        "as `evolve --train-steps`, before they are drawn (default 0: drawn as bred)",
    )
    p.add_argument("--prompts", default="auto", help="what new candidates draw (as `score`)")
    p.add_argument("-n", "--images", type=int, default=4, help="images per new candidate")
    add_image_seed_option(p, "seed of the first image a new candidate draws")
    add_scoring_options(p)
    add_device_options(p)
    add_project_option(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(a: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..web.app import GalleryOptions, create_app
        from ..web.guard import served_hosts
    except ImportError as exc:
        raise OnewordError(f"serve: {exc.name} is not installed; pip install -e . again") from None
    from ..search.embedding_ops import Breeding

    if not 0 < a.port < 65536:
        raise OnewordError(f"--port {a.port}: must be 1-65535")
    breeding = Breeding(
        selection=a.selection, crossover=a.crossover, mutation=a.mutation, elites=a.elites
    )
    drawing = score_settings(a, prompts=a.prompts, images=a.images, seed=a.image_seed)
    hosts = served_hosts(a.host, a.port, tuple(a.allow_host))
    options = GalleryOptions(a.population, breeding, drawing, a.seed, a.train_steps)
    app = create_app(a.project, options, hosts)
    print(f"oneword gallery of {app.state.folder}: http://{a.host}:{a.port}/  (Ctrl+C stops)")
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0
