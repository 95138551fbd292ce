#!/usr/bin/env python
"""Render an axial slice of a CT with a segmentation overlaid to PNG, headless, the way Slicer's slice views do.

Each volume is resliced on the same axial plane from its own voxel-to-RAS geometry
(``vtkImageReslice``: linear for the CT, nearest neighbour for the labels, as Slicer's
background and label layers), the CT goes through a window/level lookup table, the labels
through a categorical lookup table with a fill opacity, the two are blended and drawn by an
off-screen VTK render window (EGL or OSMesa, no display needed). Screen orientation follows
Slicer's axial view: patient right on the left, anterior at the top.

Examples:
    # a CT and a label map (any two grids: each keeps its own geometry)
    python scripts/render_overlay.py --ct ct.nii.gz --labels seg.nii.gz --out overlay.png

    # run a trained HyperSORT run on the CT at its main mode (or --case ID, --latent z1 z2 ...)
    python scripts/render_overlay.py --ct ct.nii.gz --run runs/demo --out overlay.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "HyperSORT"))  # class colours shared with the Slicer module

#: Slicer's axial slice-to-RAS directions: screen x -> patient left (-R), screen y -> anterior.
AXIAL_DIRECTIONS = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _image_data(array: np.ndarray):
    """vtkImageData in IJK index space (origin 0, spacing 1) holding an [I, J, K] array."""
    import vtk
    from vtk.util import numpy_support

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"Expected a 3-D [I, J, K] array, found shape {array.shape}.")
    if array.dtype == np.bool_ or array.dtype == np.int64 or array.dtype == np.uint64:
        array = array.astype(np.int32)
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape)
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).reshape(-1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    return image


def _matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def axial_plane(ct_shape: Sequence[int], ct_affine: np.ndarray, slice_s: float, size: int):
    """Output grid of an axial slice covering the CT's R/A extent: (xy_to_ras 4x4, width, height, pixel mm)."""
    corners = np.array([[i, j, k, 1.0] for i in (0, ct_shape[0] - 1) for j in (0, ct_shape[1] - 1)
                        for k in (0, ct_shape[2] - 1)])
    ras = corners @ np.asarray(ct_affine, dtype=np.float64).T
    low, high = ras[:, :3].min(0), ras[:, :3].max(0)
    extent = high[:2] - low[:2]
    pixel = float(max(extent.max(), 1e-6)) / (size - 1)
    width, height = (np.floor(extent / pixel).astype(int) + 1).tolist()
    xy_to_ras = np.eye(4)
    xy_to_ras[:3, :3] = AXIAL_DIRECTIONS * pixel
    xy_to_ras[:3, 3] = [high[0], low[1], slice_s]
    return xy_to_ras, int(width), int(height), pixel


def reslice(array: np.ndarray, affine: np.ndarray, xy_to_ras: np.ndarray, width: int, height: int,
            nearest: bool, background: float = 0.0) -> np.ndarray:
    """Sample ``array`` (voxel-to-RAS ``affine``) on the slice grid: [height, width], row 0 at the bottom."""
    import vtk
    from vtk.util import numpy_support

    reslicer = vtk.vtkImageReslice()
    reslicer.SetInputData(_image_data(array))
    reslicer.SetResliceAxes(_matrix(np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ xy_to_ras))
    reslicer.SetOutputExtent(0, width - 1, 0, height - 1, 0, 0)
    reslicer.SetOutputSpacing(1.0, 1.0, 1.0)
    reslicer.SetOutputOrigin(0.0, 0.0, 0.0)
    reslicer.SetBackgroundLevel(background)
    if nearest:
        reslicer.SetInterpolationModeToNearestNeighbor()
    else:
        reslicer.SetInterpolationModeToLinear()
    reslicer.Update()
    scalars = reslicer.GetOutput().GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(height, width)


def _label_lookup_table(colors: Sequence[Sequence[float]], opacity: float):
    import vtk

    table = vtk.vtkLookupTable()
    table.SetNumberOfTableValues(len(colors))
    table.SetTableRange(0, len(colors) - 1)
    for index, rgb in enumerate(colors):
        table.SetTableValue(index, float(rgb[0]), float(rgb[1]), float(rgb[2]), 0.0 if index == 0 else opacity)
    table.IndexedLookupOff()
    table.Build()
    return table


def render_overlay(ct: np.ndarray, ct_affine: np.ndarray, labels: np.ndarray, label_affine: np.ndarray,
                   out_png: str | Path, slice_s: float | None = None, size: int = 512, window: float = 400.0,
                   level: float = 40.0, opacity: float = 0.5, class_names: Sequence[str] | None = None,
                   colors: Sequence[Sequence[float]] | None = None, legend: bool = True,
                   title: str | None = None) -> dict:
    """Render the overlay to ``out_png``; returns the slice geometry and the resliced label map.

    Args:
        ct, ct_affine: intensities [I, J, K] (HU) and their voxel-to-RAS matrix.
        labels, label_affine: class indices [I', J', K'] (0 = background) on their own grid.
        slice_s: the axial plane's S coordinate (mm); default: the plane with the most labelled voxels.
        size: pixels along the longer side of the slice.
        window, level: CT display window (HU), as Slicer's window/level.
        opacity: fill opacity of the label layer.
        class_names, colors: legend names and RGB colours per class index (default: Slicer-like colours).
    """
    import vtk
    from vtk.util import numpy_support

    from HyperSORTModule.SegmentationNodes import classColors

    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1
    class_names = list(class_names) if class_names else [f"class {i}" for i in range(n_classes)]
    if len(class_names) < n_classes:
        class_names += [f"class {i}" for i in range(len(class_names), n_classes)]
    colors = list(colors) if colors else classColors(class_names)
    if slice_s is None:
        slice_s = _busiest_axial_plane(labels, label_affine, ct.shape, ct_affine)
    xy_to_ras, width, height, pixel = axial_plane(ct.shape, ct_affine, slice_s, size)

    ct_slice = reslice(ct.astype(np.float32), ct_affine, xy_to_ras, width, height, nearest=False, background=-1024)
    label_slice = reslice(labels.astype(np.int32), label_affine, xy_to_ras, width, height, nearest=True)

    ct_layer = vtk.vtkImageMapToWindowLevelColors()
    ct_layer.SetInputData(_slice_image(ct_slice))
    ct_layer.SetWindow(window)
    ct_layer.SetLevel(level)
    ct_layer.SetOutputFormatToRGBA()
    label_layer = vtk.vtkImageMapToColors()
    label_layer.SetInputData(_slice_image(label_slice))
    label_layer.SetLookupTable(_label_lookup_table(colors, opacity))
    label_layer.SetOutputFormatToRGBA()
    blend = vtk.vtkImageBlend()
    blend.AddInputConnection(ct_layer.GetOutputPort())
    blend.AddInputConnection(label_layer.GetOutputPort())
    blend.SetOpacity(1, 1.0)  # the label alpha (0 for background) carries the opacity
    blend.Update()

    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputConnection(blend.GetOutputPort())
    actor.InterpolateOff()
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0, 0, 0)
    renderer.AddActor(actor)
    text = title if title is not None else f"S = {slice_s:.1f} mm"
    _add_text(renderer, text, (6, 6), (1.0, 1.0, 1.0), 13)
    render_window = vtk.vtkRenderWindow()
    render_window.SetOffScreenRendering(1)
    render_window.AddRenderer(renderer)
    total_width = width
    if legend:
        present = [int(v) for v in np.unique(label_slice) if v > 0]
        entries = [(class_names[i], colors[i]) for i in present][: max(1, (height - 12) // 15)]
        legend_width = 16 + 7 * max([len(name) for name, _ in entries] + [8])
        total_width = width + legend_width
        renderer.SetViewport(0.0, 0.0, width / total_width, 1.0)
        legend_renderer = vtk.vtkRenderer()
        legend_renderer.SetViewport(width / total_width, 0.0, 1.0, 1.0)
        legend_renderer.SetBackground(0.08, 0.08, 0.1)
        _add_legend(legend_renderer, entries, height)
        render_window.AddRenderer(legend_renderer)
    render_window.SetSize(total_width, height)
    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    camera.SetFocalPoint((width - 1) / 2.0, (height - 1) / 2.0, 0.0)
    camera.SetPosition((width - 1) / 2.0, (height - 1) / 2.0, 1000.0)
    camera.SetViewUp(0, 1, 0)
    camera.SetParallelScale(height / 2.0)
    renderer.ResetCameraClippingRange()
    render_window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(render_window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(tmp))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    tmp.replace(out_png)
    rgb = numpy_support.vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars()).reshape(height, total_width, -1)
    render_window.Finalize()
    return {"slice_s": float(slice_s), "pixel_mm": pixel, "width": width, "height": height, "image_width": total_width,
            "xy_to_ras": xy_to_ras, "labels": label_slice, "rgb": rgb}


def _slice_image(array2d: np.ndarray):
    return _image_data(np.asarray(array2d)[:, :, None].transpose(1, 0, 2))


def _busiest_axial_plane(labels, label_affine, ct_shape, ct_affine) -> float:
    """S coordinate (mm) of the label grid's axial plane with the most foreground voxels."""
    affine = np.asarray(label_affine, dtype=np.float64)
    axis = int(np.argmax(np.abs(affine[2, :3])))  # the voxel axis closest to S
    counts = np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != axis))
    if counts.max() == 0:
        centre = (np.asarray(ct_shape) - 1) / 2.0
        return float((np.asarray(ct_affine) @ [*centre, 1.0])[2])
    index = np.zeros(3)
    index[axis] = int(np.argmax(counts))
    other = [a for a in range(3) if a != axis]
    index[other] = (np.asarray(labels.shape)[other] - 1) / 2.0
    return float((affine @ [*index, 1.0])[2])


def _add_text(renderer, text, position, color, size, shadow: bool = True):
    import vtk

    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    actor.SetPosition(*position)
    prop = actor.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(*color)
    prop.SetShadow(shadow)
    renderer.AddViewProp(actor)


def _add_legend(renderer, entries, height):
    for row, (name, color) in enumerate(entries):
        _add_text(renderer, name, (8, height - 20 - 15 * row), tuple(float(c) for c in color), 12, shadow=False)


# ---------------------------------------------------------------------------- command line
def _segment_with_run(run_dir: Path, ct: np.ndarray, affine: np.ndarray, case: str | None,
                      latent: Sequence[float] | None, device: str):
    from HyperSORTLib.inference import InteractiveSegmenter

    segmenter = InteractiveSegmenter.load(run_dir, device=device)
    segmenter.set_volume(ct, affine)
    z = latent if latent is not None else segmenter.latent_of(case) if case else segmenter.main_mode()
    result = segmenter.segment(z)
    return result.array, result.affine, list(segmenter.class_names)


def _class_names_from_json(path: Path) -> list[str]:
    """Names from a {"1": "spleen", ...} or {"spleen": 1, ...} map (TotalSegmentator, dataset.json labels)."""
    doc = json.loads(Path(path).read_text())
    doc = doc.get("labels", doc)
    pairs = [(int(k), v) for k, v in doc.items()] if all(str(k).isdigit() for k in doc) else \
        [(int(v), k) for k, v in doc.items()]
    names = ["background"] * (max(i for i, _ in pairs) + 1)
    for index, name in pairs:
        names[index] = str(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", required=True, type=Path, help="CT NIfTI (HU)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="label map NIfTI (class indices)")
    source.add_argument("--run", type=Path, help="HyperSORT run directory: segment the CT with it")
    parser.add_argument("--case", help="with --run: segment as this training case (default: the main mode)")
    parser.add_argument("--latent", type=float, nargs="+", help="with --run: segment at this latent point")
    parser.add_argument("--device", default="cpu", help="with --run: cpu, cuda or auto")
    parser.add_argument("--class-names", type=Path, help="JSON map of label ids to names")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--slice", type=float, help="axial plane S coordinate in mm (default: most labelled)")
    parser.add_argument("--size", type=int, default=512, help="pixels along the longer side")
    parser.add_argument("--window", type=float, default=400.0)
    parser.add_argument("--level", type=float, default=40.0)
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--title", help="caption drawn at the bottom left")
    args = parser.parse_args(argv)

    import nibabel as nib

    for path in (args.ct, args.labels):
        if path is not None and not path.is_file():
            parser.error(f"{path} does not exist")
    ct_image = nib.load(str(args.ct))
    ct = np.asarray(ct_image.dataobj, dtype=np.float32)
    names = None
    if args.labels is not None:
        label_image = nib.load(str(args.labels))
        labels, label_affine = np.asarray(label_image.dataobj).astype(np.int32), label_image.affine
    else:
        labels, label_affine, names = _segment_with_run(args.run, ct, ct_image.affine, args.case, args.latent,
                                                        args.device)
    if args.class_names is not None:
        names = _class_names_from_json(args.class_names)
    info = render_overlay(ct, ct_image.affine, labels, label_affine, args.out, slice_s=args.slice, size=args.size,
                          window=args.window, level=args.level, opacity=args.opacity, class_names=names,
                          title=args.title)
    print(f"{args.out}: {info['width']}x{info['height']} px, axial plane S = {info['slice_s']:.1f} mm, "
          f"{info['pixel_mm']:.2f} mm/pixel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
