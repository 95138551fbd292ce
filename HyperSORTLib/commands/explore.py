"""``hypersort explore``: the latent map and live overlays in a web browser.

The page (trame + trame-slicer, the optional ``explore`` extra) shows Slicer's slice views of a scan
with the segmentation as label layer, the run's latent map (click a sample or a style centre, drag the
probe), Accept (files written next to the scan, never over an existing one) and the review queue.

Security: it listens on 127.0.0.1 unless ``--host`` names another address; then every browser needs
the access token printed once at start (or the one given with ``--token``). The server reads files
only below the run, the scan's folder, ``--data`` and ``--allow`` folders, and writes only next to a
scan the user opened. For a remote GPU server, forward the port over SSH instead:
``ssh -L 8080:127.0.0.1:8080 gpu-server`` then open http://127.0.0.1:8080/ on the laptop.

Only the argument parsing lives here (no heavy import); the web front end is
``HyperSORT/HyperSORTExplore`` beside the Slicer module, whose Qt-free Logic it drives; a wheel installs
both as the top-level packages ``HyperSORTExplore`` and ``HyperSORTModule``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from HyperSORTLib.commands import add_data_option, add_device_option, add_run_option

NAME = "explore"
HELP = "explore the latent map and live overlays in a web browser (needs the 'explore' extra)"

#: The front end's folder (the Slicer module's folder) relative to this package's repository root.
FRONT_END_FOLDER = "HyperSORT"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Serve a web page with Slicer's slice views of a CT, the run's latent map and live overlays: "
                    "click a training sample or a style centre to segment the CT with its UNet, drag the probe, "
                    "accept a full-resolution segmentation (written next to the scan as NIfTI and .seg.nrrd, never "
                    "over an existing file) and review the audit's suspects (verdicts in RUN/analysis/review.csv). "
                    "Listens on 127.0.0.1 unless --host is given; then an access token is required. For a remote "
                    "server use SSH port forwarding: ssh -L 8080:127.0.0.1:8080 SERVER.")
    add_run_option(parser)
    parser.add_argument("--ct", type=Path, default=None, metavar="SCAN",
                        help="CT scan (NIfTI) to open at start; its folder becomes readable")
    add_data_option(parser, required=False, help="training dataset folder for the review (default: the one the "
                                                 "run records)")
    parser.add_argument("--allow", type=Path, action="append", default=[], metavar="FOLDER",
                        help="another folder whose scans the page may open (repeatable)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other needs the access token)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--token", default=None,
                        help="access token to require (default: generated when --host is not loopback)")
    parser.add_argument("--preview-delay-ms", type=float, default=150.0, metavar="MS",
                        help="a probe drag is previewed this long after its first move; moves meanwhile join the "
                             "same preview (default 150, as in the Slicer module)")
    add_device_option(parser)


def front_end_path() -> Path:
    """The folder holding ``HyperSORTExplore`` and ``HyperSORTModule``: the source checkout's ``HyperSORT/``
    (an editable install), else where they were installed beside this package (a wheel)."""
    import importlib.util

    source = Path(__file__).resolve().parents[2] / FRONT_END_FOLDER
    if (source / "HyperSORTExplore").is_dir():
        return source
    spec = importlib.util.find_spec("HyperSORTExplore")
    if spec is not None and spec.origin and importlib.util.find_spec("HyperSORTModule") is not None:
        return Path(spec.origin).resolve().parents[1]
    raise FileNotFoundError(f"hypersort explore needs its web front end (the HyperSORTExplore and HyperSORTModule "
                            f"packages), which this installation lacks (neither in {source} nor importable); "
                            "reinstall HyperSORT: pip install 'hypersort[explore]', or from a source folder "
                            "pip install -e '.[explore]'.")


def check_arguments(args: argparse.Namespace) -> list[Path]:
    """Check paths and the port before anything heavy; returns the folders the server may read."""
    if not 0 <= args.preview_delay_ms <= 10000:
        raise ValueError(f"--preview-delay-ms must be between 0 and 10000, found {args.preview_delay_ms}.")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, found {args.port}.")
    if not args.run.is_dir():
        raise FileNotFoundError(f"--run {args.run}: no such run directory.")
    roots = [args.run]
    if args.ct is not None:
        if not args.ct.is_file():
            raise FileNotFoundError(f"--ct {args.ct}: no such scan.")
        roots.append(args.ct.parent)
    if args.data is not None:
        if not args.data.exists():
            raise FileNotFoundError(f"--data {args.data}: no such dataset.")
        roots.append(args.data)
    for folder in args.allow:
        if not folder.is_dir():
            raise FileNotFoundError(f"--allow {folder}: no such folder.")
        roots.append(folder)
    return roots


def run(args: argparse.Namespace) -> int:
    import os

    roots = check_arguments(args)
    if not os.environ.get("DISPLAY"):  # a headless GPU server: render off screen with EGL
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    folder = front_end_path()
    if folder.name == FRONT_END_FOLDER and str(folder) not in sys.path:  # a source checkout's front end
        sys.path.insert(0, str(folder))
    from HyperSORTExplore.Access import AccessPolicy, accessToken

    token, generated = accessToken(args.host, args.token)
    try:
        from HyperSORTExplore.App import ExploreApp
        import trame_slicer  # noqa: F401
    except ImportError as error:
        raise FileNotFoundError(f"hypersort explore needs trame and trame-slicer ({error}); install them with "
                                "pip install -e '.[explore]'.") from None
    policy = AccessPolicy(roots)
    app = ExploreApp(args.run, policy, scan=args.ct, dataset=args.data, device=args.device,
                     previewDelayMs=args.preview_delay_ms)

    def ready() -> None:
        port = app.server.port
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{port}/" + (f"?secret={token}" if token else "")
        print(f"HyperSORT explore: serving {url}", flush=True)
        if generated:
            print("HyperSORT explore: the access token above was generated for this session and is printed only "
                  "once; anyone with it can use this page.", flush=True)
        print(f"HyperSORT explore: reads below {policy.describe()}; Ctrl-C stops.", flush=True)

    app.serve(args.host, args.port, token=token, onReady=ready)
    return 0
