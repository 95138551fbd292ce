"""``hypersort segment``: segment a new scan the way any point of the latent map annotates."""

from __future__ import annotations

import argparse
from pathlib import Path

from HyperSORTLib.commands import (add_device_option, add_overwrite_option, add_progress_option,
                                   add_run_option)

NAME = "segment"
HELP = "segment a scan with the UNet of a latent point (main mode, a sample, a cluster or x,y)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME, help=HELP,
        description="Segment a CT scan with the UNet that the hyper-network generates for a latent point. The "
                    "scan is preprocessed like the training data, segmented with sliding-window inference and the "
                    "labels are resampled onto the input's exact grid (same shape and affine). Class names and the "
                    "latent point are written beside the output as JSON.")
    add_run_option(parser)
    parser.add_argument("--input", type=Path, required=True, help="scan to segment (NIfTI)")
    parser.add_argument("--output", type=Path, required=True,
                        help="label map to write (.nii.gz); never the input scan")
    add_overwrite_option(parser, help="replace an existing output and its segment sidecar JSON")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--latent", default=None, help="latent point as comma-separated numbers, e.g. 0.1,-0.3")
    which.add_argument("--sample", default=None, help="use this training case's latent")
    which.add_argument("--cluster", type=int, default=None, help="use this cluster's centre (see analysis/clusters.csv)")
    parser.add_argument("--preview", action="store_true",
                        help="segment on a grid 2x coarser than training (fast, approximate), still written on the "
                             "input grid")
    parser.add_argument("--preview-spacing", type=float, default=None, help="preview grid spacing in mm")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--float32", action="store_true",
                           help="run the UNet in float32 (default: on a CUDA GPU in its 16-bit type; on CPU in float32, "
                                "except --preview in bfloat16 on processors with bfloat16 instructions)")
    precision.add_argument("--mixed-precision", action="store_true",
                           help="run the UNet in the device's native 16-bit type where it has one (CUDA GPUs, CPUs with "
                                "bfloat16 instructions): 2.5-3x faster on such a CPU; labels differ at 0.01-0.05 %% of "
                                "the voxels")
    add_device_option(parser)
    add_progress_option(parser)


def parse_latent(text: str, dim: int) -> list[float]:
    """``"0.1,-0.3"`` -> ``[0.1, -0.3]``, checking the number of coordinates."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"--latent expects {dim} comma-separated numbers, found {text!r}.") from None
    if len(values) != dim:
        raise ValueError(f"--latent expects {dim} comma-separated numbers (the run's latent dimension), "
                         f"found {len(values)} in {text!r}.")
    return values


#: Marks the JSON written beside a segmentation, so ``--overwrite`` never replaces any other JSON.
SIDECAR_KIND = "hypersort segment"


def sidecar_path(output: Path) -> Path:
    """``X.nii.gz`` / ``X.nii`` -> ``X.json``."""
    name = output.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]
    return output.with_name(stem + ".json")


def is_segment_sidecar(path: Path) -> bool:
    """Whether ``path`` is a JSON file that ``hypersort segment`` wrote (and may replace)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("written_by") == SIDECAR_KIND
                                       or {"labels", "latent", "latent_source", "run", "input"} <= set(data))


def check_outputs(output: Path, scan: Path, overwrite: bool) -> Path:
    """Refuse outputs that would destroy data, before any work; returns the sidecar path.

    Refused: an output that is the input scan (even with ``overwrite``); an output or sidecar
    that is a folder or below a file; an existing output or sidecar without ``overwrite``; and,
    always, an existing sidecar that ``hypersort segment`` did not write (e.g. a run's
    ``config.json`` for ``--output RUN/config.nii.gz``).
    """
    from HyperSORTLib.utils.io import check_output_file

    if not str(output).endswith((".nii", ".nii.gz")):
        raise ValueError(f"--output must be a NIfTI file name ending in .nii or .nii.gz, found {output}.")
    check_output_file(output, overwrite, "--output", inputs=(scan,))
    sidecar = sidecar_path(output)
    if sidecar.is_file() and not is_segment_sidecar(sidecar):
        raise ValueError(f"--output {output}: its sidecar {sidecar} exists and was not written by hypersort "
                         f"segment; refusing to replace it, even with --overwrite. Choose another file name.")
    check_output_file(sidecar, overwrite, "sidecar", inputs=(scan,))
    return sidecar


def run(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np

    from HyperSORTLib.inference import InteractiveSegmenter, load_scan
    from HyperSORTLib.utils.io import atomic_save_nifti, atomic_write_json

    from HyperSORTLib.inference.geometry import check_spacing

    sidecar = check_outputs(args.output, args.input, args.overwrite)
    if args.preview_spacing is not None:
        check_spacing(args.preview_spacing, "--preview-spacing")
    array, affine, image = load_scan(args.input)
    mixed = False if args.float32 else True if args.mixed_precision else None
    seg = InteractiveSegmenter.load(args.run, device=args.device, mixed_precision=mixed)
    if args.latent is not None:
        z, source = parse_latent(args.latent, seg.latent_dim), "latent"
    elif args.sample is not None:
        z, source = seg.latent_of(args.sample), f"sample {args.sample}"
    elif args.cluster is not None:
        z, source = seg.cluster_centre(args.cluster), f"cluster {args.cluster}"
    else:
        z, source = seg.main_mode(), "main mode"
    seg.set_volume(array, affine)
    if args.preview_spacing is not None:
        seg.preview_spacing = args.preview_spacing

    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=100, desc="segmenting", unit="%")

    def progress(fraction: float) -> None:
        if bar is not None:
            bar.update(round(100 * fraction) - bar.n)

    try:
        result = seg.segment(z, preview=args.preview, progress=progress, to_input_grid=True)
    finally:
        if bar is not None:
            bar.close()
    header = image.header.copy()
    header.set_data_dtype(result.array.dtype)
    out = nib.Nifti1Image(result.array, affine, header=header)
    out.header.set_slope_inter(1, 0)
    atomic_save_nifti(out, args.output)
    present = np.unique(result.array).tolist()
    atomic_write_json(sidecar, {
        "written_by": SIDECAR_KIND,
        "labels": {str(i): n for i, n in enumerate(seg.class_names)},
        "latent": [float(v) for v in np.asarray(z).reshape(-1)],
        "latent_source": source,
        "run": str(Path(args.run).resolve()),
        "input": str(Path(args.input).resolve()),
        "preview": bool(args.preview),
        "precision": seg.precision(args.preview),
        "classes_present": [seg.class_names[i] for i in present if i < len(seg.class_names)],
        "seconds": {k: round(v, 4) for k, v in seg.timings.items()},
    })
    print(f"Wrote {args.output} ({'x'.join(map(str, result.array.shape))}, {source}) and {sidecar.name}; "
          f"classes present: {', '.join(seg.class_names[i] for i in present)}.")
    return 0
