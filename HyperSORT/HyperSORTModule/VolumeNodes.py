"""Volume nodes <-> numpy arrays in IJK order with their 4x4 IJK-to-RAS matrix.

``slicer.util.arrayFromVolume`` returns the voxels in KJI order (slice, row, column); the
library works in IJK order with a nibabel-style voxel-to-RAS affine. Everything here converts
between the two without changing the geometry, so a result written back lies exactly on the
grid it was computed for.
"""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from HyperSORTModule.Errors import HyperSORTError


def matrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A vtkMatrix4x4 holding a 4x4 numpy array."""
    array = np.asarray(array, dtype=np.float64)
    if array.shape != (4, 4):
        raise ValueError(f"Expected a 4x4 matrix, found shape {array.shape}.")
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def arrayFromMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """The 4x4 numpy array of a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def ijkToRas(volumeNode) -> np.ndarray:
    """The IJK-to-RAS matrix of a volume node (its own frame, parent transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromMatrix(matrix)


def _describe(volumeNode) -> str:
    return f"volume '{volumeNode.GetName()}'" if volumeNode is not None else "volume"


def volumeArrayIJK(volumeNode) -> np.ndarray:
    """The voxels of a scalar volume node as an [I, J, K] array (a view on the node's memory).

    Raises:
        HyperSORTError: no image data, several components per voxel (colour or vector volumes).
    """
    if volumeNode is None:
        raise HyperSORTError("No input volume is selected.")
    image = volumeNode.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise HyperSORTError(f"The {_describe(volumeNode)} has no voxel data.")
    if image.GetNumberOfScalarComponents() != 1:
        raise HyperSORTError(f"The {_describe(volumeNode)} has {image.GetNumberOfScalarComponents()} components per "
                             "voxel; expected a single-component (grey-level) CT volume.")
    dims = image.GetDimensions()
    kji = numpy_support.vtk_to_numpy(scalars).reshape(dims[::-1])
    return kji.transpose(2, 1, 0)


def volumeKey(volumeNode) -> str:
    """Identifies the voxels and geometry of a volume node: changes when either changes."""
    image = volumeNode.GetImageData()
    imageTime = image.GetMTime() if image is not None else 0
    scalars = image.GetPointData().GetScalars() if image is not None else None
    scalarsTime = scalars.GetMTime() if scalars is not None else 0
    geometry = ",".join(f"{v:.9g}" for v in ijkToRas(volumeNode).ravel())
    return f"{volumeNode.GetID()}:{imageTime}:{scalarsTime}:{geometry}"


def updateVolumeFromIJK(volumeNode, array: np.ndarray, affine: np.ndarray) -> None:
    """Replace the voxels and geometry of ``volumeNode`` with an [I, J, K] array and its IJK-to-RAS matrix.

    The node keeps its identity (ID, display, slice-view references); only its content changes.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"Expected an [I, J, K] array, found shape {array.shape}.")
    kji = np.ascontiguousarray(array.transpose(2, 1, 0))
    vtkType = numpy_support.get_vtk_array_type(kji.dtype)
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape)
    scalars = numpy_support.numpy_to_vtk(kji.reshape(-1), deep=True, array_type=vtkType)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    wasModifying = volumeNode.StartModify()
    volumeNode.SetIJKToRASMatrix(matrixFromArray(affine))
    volumeNode.SetAndObserveImageData(image)
    volumeNode.EndModify(wasModifying)
