"""sharedzarr: Zarr-style chunked N-d arrays in named POSIX shared memory.

One process creates an array under a name; any process that knows the name
attaches and reads the chunks directly from shared memory: no pickling, no
message passing, no server.  The Python counterpart of ExZarr's ETS backend.

>>> import numpy as np, sharedzarr as sz
>>> a = sz.create(shape=(1000, 1000), chunks=(100, 100), dtype="float64",
...               storage="shm", table_name="doc_example")
>>> a.set_slice(np.ones((100, 100)), start=(0, 0), stop=(100, 100))
>>> float(sz.open("doc_example").get_slice(start=(0, 0), stop=(2, 2)).sum())
4.0
>>> a.delete()
"""

from . import errors, storage

# ``sharedzarr.array`` is the constructor (as in numpy and zarr): importing a submodule sets the
# package attribute only when it first loads, so the name bound here wins, and
# ``import sharedzarr.array`` / ``from sharedzarr.array import Array`` still find the module in
# sys.modules (see sharedzarr._constructors).
from ._constructors import (
    array,
    empty,
    empty_like,
    full,
    full_like,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from ._export import export, load
from ._table import Table
from .array import Array, create, open
from .errors import (
    AccessDeniedError,
    CorruptTableError,
    LockTimeoutError,
    NotFoundError,
    OutOfSpaceError,
    SharedZarrError,
    TableExistsError,
    TableNotFoundError,
    TooManyOpenFilesError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "Array",
    "CorruptTableError",
    "LockTimeoutError",
    "NotFoundError",
    "OutOfSpaceError",
    "TooManyOpenFilesError",
    "SharedZarrError",
    "Table",
    "TableExistsError",
    "TableNotFoundError",
    "__version__",
    "array",
    "create",
    "empty",
    "empty_like",
    "errors",
    "export",
    "full",
    "full_like",
    "load",
    "ones",
    "ones_like",
    "open",
    "storage",
    "zeros",
    "zeros_like",
]
