"""An ONNX graph's inputs and outputs as ``config.json`` records them: name, element type, dims.

TensorFlow-free (needs the ``onnx`` package): the Keras exporter (``export.convert``) and the
publisher of ONNX models made elsewhere (``export.foreign``) both record their graphs with it.
"""

from __future__ import annotations

import numpy as np
import onnx

from aeq.repository import TensorInfo

# Dims recorded in config.json use -1 for a dimension without a number (a named dim such as
# ``batch``, or none at all), as Triton does.
DYNAMIC_DIM = -1


def tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    """One graph input or output: its name, numpy element type name and dims (-1 = open)."""
    tensor_type = value.type.tensor_type
    dims = tuple(
        dim.dim_value if dim.HasField("dim_value") else DYNAMIC_DIM for dim in tensor_type.shape.dim
    )
    return TensorInfo(value.name, element_type_name(tensor_type.elem_type), dims)


def element_type_name(elem_type: int) -> str:
    """The numpy name of an ONNX element type (``float32``), or ONNX's own for those numpy lacks
    (``bfloat16``, ``undefined``)."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()
