"""The stand-in's ndarray and ufuncs: NumPy underneath, CuPy 13's rules on top.

See the package docstring (cupy/__init__.py) for the rules and the API; _standin.py for the
counters. Every NumPy array held here is reached only through `ndarray._a`; nothing in this module
hands one out except the counted host reads.
"""
import functools
import os

import numpy as np

from . import _standin as S

# ---- what counts as a scalar, and CuPy 13's type promotion ---------------------------------------

_PYTHON_SCALARS = (bool, int, float, complex)
_KIND_SCORE = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}       # cupy/_core/_kernel.pyx


def _is_scalar(x):
    """A Python number or a NumPy numeric scalar (exact types, as CuPy's scalar_type_set)."""
    return type(x) in _PYTHON_SCALARS or (isinstance(x, np.generic) and x.dtype.kind in "biufc")


def _scalar_dtype(x):
    """The dtype a scalar has on its own: NumPy's for NumPy scalars; for Python numbers bool,
    int64 (uint64 from 2**63), float64, complex128, as CuPy's CScalar."""
    if isinstance(x, np.generic):
        return x.dtype
    if type(x) is bool:
        return np.dtype(np.bool_)
    if type(x) is int:
        return np.dtype(np.uint64 if x >= 2 ** 63 else np.int64)
    return np.dtype(np.float64 if type(x) is float else np.complex128)


def _min_scalar_types(x):
    """CuPy's _min_scalar_type: the smallest dtypes that hold the value (a non-negative integer
    has two: signed and unsigned)."""
    t = np.min_scalar_type(x)
    if t.kind == "u":
        signed = np.dtype(t.char.lower())
        if x <= np.iinfo(signed).max:
            return (signed, t)
    return (t,)


PROMOTION = os.environ.get("CUPY_STANDIN_PROMOTION", "13")    # "13" (default) or "14"
if PROMOTION not in ("13", "14"):
    raise ImportError(f"CUPY_STANDIN_PROMOTION={PROMOTION!r}: use 13 or 14")
if PROMOTION == "14" and int(np.__version__.split(".")[0]) < 2:
    raise ImportError("CUPY_STANDIN_PROMOTION=14 (NEP 50) needs NumPy 2")


def result_dtype(array_dtypes, scalars):
    """The dtype CuPy computes in: CuPy 13's rule (_result_dtype_13), or with
    CUPY_STANDIN_PROMOTION=14 CuPy 14's, which is NumPy 2's (NEP 50: Python numbers are weak,
    NumPy scalars are as strong as arrays: float32 array * np.float64(0.5) is float64)."""
    if PROMOTION == "14":
        dtype = np.result_type(*array_dtypes, *[s if type(s) in _PYTHON_SCALARS else s.dtype
                                                for s in scalars])
        for s in scalars:
            if type(s) is int and dtype.kind in "iu" and not (
                    np.iinfo(dtype).min <= s <= np.iinfo(dtype).max):
                raise OverflowError(f"Python integer {s} out of bounds for {dtype}")
        return dtype
    return _result_dtype_13(array_dtypes, scalars)


def _result_dtype_13(array_dtypes, scalars):
    """The dtype CuPy 13 computes in for arrays of `array_dtypes` with Python/NumPy `scalars`.

    CuPy <= 13 (cupy/_core/_kernel.pyx, _check_should_use_min_scalar): when the arrays' highest
    kind (bool < int < float < complex) is at least the scalars' highest kind, every scalar takes
    part with the smallest type that holds its VALUE (legacy value-based casting, NumPy 1's rule),
    and NumPy scalars are treated exactly like Python scalars: float32 array * np.float64(0.1) is
    float32 (NumPy 2 says float64). Otherwise scalars take part with their own dtype. 0-d device
    arrays are arrays, not scalars: float32 array * 0-d float64 device array is float64."""
    array_dtypes = list(array_dtypes)
    if not array_dtypes:
        return np.result_type(*[_scalar_dtype(s) for s in scalars])
    if not scalars:
        return np.result_type(*array_dtypes)
    array_kind = max(_KIND_SCORE[d.kind] for d in array_dtypes)
    scalar_kind = max(_KIND_SCORE[_scalar_dtype(s).kind] for s in scalars)
    if array_kind < scalar_kind:
        return np.result_type(*array_dtypes, *[_scalar_dtype(s) for s in scalars])
    types = list(array_dtypes)
    for s in scalars:
        types.append(min(_min_scalar_types(s), key=lambda t: np.result_type(*types, t).itemsize))
    return np.result_type(*types)


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _operands(args):
    """Split ufunc-style arguments into device arrays and scalars; anything else (a NumPy array,
    a list, None) is a TypeError, as CuPy's _preprocess_args."""
    for x in args:
        if not isinstance(x, ndarray) and not _is_scalar(x):
            raise _unsupported(x)
    dtypes = [x._a.dtype for x in args if isinstance(x, ndarray)]
    scalars = [x for x in args if not isinstance(x, ndarray)]
    return dtypes, scalars


def _inputs(args, dtype):
    """The NumPy inputs of a computation in `dtype`: arrays and scalars cast to it (so that
    NumPy's own promotion, which differs between NumPy 1 and 2, has nothing left to decide)."""
    out = []
    for x in args:
        a = x._a if isinstance(x, ndarray) else np.asarray(x)
        out.append(a if a.dtype == dtype else a.astype(dtype))
    return out


# ---- API bookkeeping -----------------------------------------------------------------------------

FUNCTIONS = {}       # name -> stand-in function: what cupy.<name> and __array_function__ offer


def api(name, fusable=False):
    """Record each call of `name` (cupy._standin.used); refuse it inside cupy.fuse unless it is
    elementwise or a reduction."""
    def wrap(function):
        @functools.wraps(function)
        def counted(*args, **kwargs):
            S.used[name] += 1
            if not fusable:
                S.not_in_fuse(name)
            return function(*args, **kwargs)
        return counted
    return wrap


def function(name=None, fusable=False):
    """A module-level function of the stand-in (cupy.<name>), recorded in FUNCTIONS."""
    def wrap(f):
        counted = api(name or f.__name__, fusable)(f)
        FUNCTIONS[name or f.__name__] = counted
        return counted
    return wrap


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc":
        raise ValueError(f"Unsupported dtype {dtype}")
    return dtype


def _wrap(a):
    """A device array around the NumPy array `a` (which it now owns or views)."""
    result = ndarray.__new__(ndarray)
    result._a = a
    return result


def _new(a):
    """A device array holding a result computed by NumPy (a scalar becomes a 0-d array)."""
    return _wrap(np.asarray(a))


# ---- the array -----------------------------------------------------------------------------------

class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


def _should_use_rop(x, y):
    """CuPy's rule for giving way to the other operand's reflected operator."""
    try:
        y_ufunc = y.__array_ufunc__
    except AttributeError:
        return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)
    return y_ufunc is None


class ndarray:
    """A CuPy array held by NumPy: see the package docstring for the rules it enforces."""
    __module__ = "cupy"
    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in has no memory pointers")
        S.used["ndarray"] += 1
        self._a = np.empty(shape, dtype=_check_dtype(dtype), order=order)

    # -- what NumPy (and Pillow, matplotlib, ...) may not do -------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc_, method, *inputs, **kwargs):
        """A NumPy ufunc given a device array runs the stand-in's (CuPy's __array_ufunc__): only
        where the stand-in has it; a NumPy array among the inputs is a TypeError there."""
        ours = UFUNCS.get(ufunc_.__name__)
        if ours is None:
            return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out[0]
        if method == "__call__":
            return ours(*inputs, **kwargs)
        if method == "at":
            return ours.at(*inputs, **kwargs)
        return NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        """np.<name>(device array) runs cupy.<name> where the stand-in has it; otherwise NumPy
        raises TypeError (no implementation found)."""
        ours = FUNCTIONS.get(func.__name__) if func.__module__ == "numpy" else None
        if ours is None:
            return NotImplemented
        for t in types:
            if not issubclass(t, (ndarray, np.ndarray)):
                return NotImplemented
        return ours(*args, **kwargs)

    # -- attributes --------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    @property
    def T(self):
        S.used["ndarray.T"] += 1
        return _wrap(self._a.T)

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- host reads: each one waits for the GPU ----------------------------------------------------
    @api("ndarray.get")
    def get(self, stream=None, order="C", out=None, blocking=True):
        S.host_read("get")
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    @api("ndarray.item")
    def item(self):
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        S.host_read("item")
        return self._a.item()

    @api("ndarray.tolist")
    def tolist(self):
        S.host_read("tolist")
        return self._a.tolist()

    def _read(self, kind):
        S.used[kind] += 1
        S.host_read(kind)
        return self._a.copy()

    def __float__(self):
        return float(self._read("float()"))

    def __int__(self):
        return int(self._read("int()"))

    def __complex__(self):
        return complex(self._read("complex()"))

    def __bool__(self):
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        if self._a.size == 0:
            return False
        return bool(self._read("bool()"))

    def __repr__(self):
        return repr(self._read("repr()"))

    def __str__(self):
        return str(self._read("str()"))

    def __format__(self, spec):
        return format(self._read("format()"), spec)

    def __reduce__(self):
        return (_from_host, (self._read("pickle"),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- copies and casts --------------------------------------------------------------------------
    @api("ndarray.copy")
    def copy(self, order="C"):
        S.launch("copy")
        return _wrap(self._a.copy(order=order))

    @api("ndarray.astype", fusable=True)
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dtype = _check_dtype(dtype)
        if not copy and dtype == self._a.dtype:
            return self
        S.launch("astype")
        return _wrap(self._a.astype(dtype, order=order))

    # -- views (no kernel) and reshapes ------------------------------------------------------------
    @api("ndarray.reshape")
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        out = self._a.reshape(shape, order=order)
        if not np.may_share_memory(out, self._a) and out.size:
            S.launch("copy")                # no view possible: CuPy copies too
        return _wrap(out)

    @api("ndarray.transpose")
    def transpose(self, *axes):
        return _wrap(self._a.transpose(*axes))

    # -- indexing ----------------------------------------------------------------------------------
    def __getitem__(self, key):
        S.used["ndarray.__getitem__"] += 1
        S.not_in_fuse("indexing")
        key, advanced = _index_key(self._a, key)
        if not advanced:
            return _wrap(self._a[key])        # basic indexing: a view, even when 0-d
        S.launch("take")
        return _new(self._a[key])

    def __setitem__(self, key, value):
        S.used["ndarray.__setitem__"] += 1
        S.not_in_fuse("indexing")
        key, advanced = _index_key(self._a, key)
        if isinstance(value, ndarray):
            value = value._a
            if not advanced and _same_view(self._a[key], value):
                return                  # a[i] += x stores a[i]'s own view back: CuPy skips it
        elif isinstance(value, (np.ndarray, list, tuple)) and advanced:
            value = np.asarray(value)
            _check_dtype(value.dtype)
            S.host_to_device(value.nbytes)       # CuPy copies host values for a scatter
        elif isinstance(value, np.ndarray):
            if value.shape != ():                # CuPy's basic-index assignment is fill()
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif not _is_scalar(value):
            raise _unsupported(value)
        S.launch("scatter" if advanced else "copy")
        self._a[key] = value

    @api("ndarray.repeat")
    def repeat(self, repeats, axis=None):
        if not isinstance(repeats, (int, np.integer)):
            raise _unsupported(repeats)       # CuPy takes an int (or a host list of ints)
        S.launch("repeat")
        return _wrap(self._a.repeat(repeats, axis=axis))

    # -- reductions --------------------------------------------------------------------------------
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return _reduce("sum", self, axis, out, keepdims, dtype=dtype)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return _reduce("mean", self, axis, out, keepdims, dtype=dtype)

    def max(self, axis=None, out=None, keepdims=False):
        return _reduce("max", self, axis, out, keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return _reduce("min", self, axis, out, keepdims)

    def argmax(self, axis=None, out=None, keepdims=False):
        return _reduce("argmax", self, axis, out, keepdims)

    def argmin(self, axis=None, out=None, keepdims=False):
        return _reduce("argmin", self, axis, out, keepdims)

    def __matmul__(self, other):
        if _should_use_rop(self, other):
            return NotImplemented
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __imatmul__(self, other):
        return matmul(self, other, out=self)


def _same_view(a, b):
    """Whether two NumPy arrays are the same memory seen the same way."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


def _from_host(array):
    """Unpickling: the host copy goes back to the device."""
    S.host_to_device(array.nbytes)
    return _wrap(array)


def _operator(ufunc_name, kind):
    """ndarray's operator `kind` ("forward", "reflected", "inplace" or "unary") as ufunc_name."""
    def forward(self, other):
        if _should_use_rop(self, other):
            return NotImplemented
        return UFUNCS[ufunc_name](self, other)

    def reflected(self, other):
        return UFUNCS[ufunc_name](other, self)

    def inplace(self, other):
        return UFUNCS[ufunc_name](self, other, out=self)

    def unary(self):
        return UFUNCS[ufunc_name](self)
    return {"forward": forward, "reflected": reflected, "inplace": inplace, "unary": unary}[kind]


_BINARY_OPERATORS = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
                     "floordiv": "floor_divide", "pow": "power", "mod": "remainder",
                     "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor"}
for _name, _ufunc in _BINARY_OPERATORS.items():
    setattr(ndarray, f"__{_name}__", _operator(_ufunc, "forward"))
    setattr(ndarray, f"__r{_name}__", _operator(_ufunc, "reflected"))
    setattr(ndarray, f"__i{_name}__", _operator(_ufunc, "inplace"))
for _name, _ufunc in {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                      "eq": "equal", "ne": "not_equal"}.items():
    setattr(ndarray, f"__{_name}__", _operator(_ufunc, "forward"))
for _name, _ufunc in {"neg": "negative", "pos": "positive", "abs": "absolute",
                      "invert": "invert"}.items():
    setattr(ndarray, f"__{_name}__", _operator(_ufunc, "unary"))


# ---- indexing rules ------------------------------------------------------------------------------

def _index_key(a, key):
    """(NumPy key, advanced?) for indexing the NumPy array `a` as CuPy indexes: device index arrays
    are used as they are; host index arrays and lists are accepted (a host-to-device copy);
    integer index arrays wrap around out-of-range values (CuPy does not raise: a[[1, 3]] of a
    3-element array is a[[1, 0]]); a boolean mask is a host read (CuPy reads the number of True
    values back to size the result); basic indexing gives a view, 0-d included."""
    items = list(key) if isinstance(key, tuple) else [key]
    converted, advanced = [], False
    for k in items:
        if k is None or k is Ellipsis or isinstance(k, slice):
            converted.append(k)
            continue
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            converted.append(k)
            continue
        if isinstance(k, ndarray):
            array = k._a
        elif isinstance(k, (list, tuple, np.ndarray, bool, np.bool_)):
            array = np.asarray(k)
            if isinstance(k, list) and array.size == 0:
                array = array.astype(np.int32)
            S.host_to_device(array.nbytes)
        else:
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis "
                             "(`None`) and integer or boolean arrays are valid indices")
        if array.dtype.kind == "b":
            S.host_read("boolean mask index")
        elif array.dtype.kind not in "iu":
            raise IndexError("arrays used as indices must be of integer (or boolean) type")
        converted.append(array)
        advanced = True
    if not advanced:
        if not any(k is Ellipsis for k in converted):
            converted.append(Ellipsis)
        return tuple(converted), False
    # wrap integer index arrays into range, axis by axis
    consumed = sum(0 if k is None or k is Ellipsis else
                   (k.ndim if isinstance(k, np.ndarray) and k.dtype.kind == "b" else 1)
                   for k in converted)
    axis = 0
    for i, k in enumerate(converted):
        if k is None:
            continue
        if k is Ellipsis:
            axis += a.ndim - consumed
            continue
        if isinstance(k, np.ndarray) and k.dtype.kind == "b":
            axis += k.ndim
            continue
        if isinstance(k, np.ndarray) and axis < a.ndim and a.shape[axis] > 0:
            converted[i] = np.mod(k, a.shape[axis])
        axis += 1
    return tuple(converted), True


# ---- ufuncs --------------------------------------------------------------------------------------

UFUNCS = {}

# cupy.add.at's check (cupy/_core/_routines_indexing.pyx, _scatter_op_single, v12-v14): atomicAdd
# exists for these types only; int64 (and int8/16, uint8/16, bool) arrays are refused.
SCATTER_ADD_DTYPES = tuple(np.dtype(t) for t in (np.int32, np.float16, np.float32, np.float64,
                                                  np.uint32, np.uint64))


class ufunc:
    """A CuPy universal function: elementwise, on device arrays and scalars only, one kernel
    launch per call, with CuPy 13's type promotion (result_dtype)."""
    __module__ = "cupy"

    def __init__(self, name, numpy_ufunc):
        self.__name__ = self.name = name
        self._numpy = numpy_ufunc
        self.nin, self.nout = numpy_ufunc.nin, numpy_ufunc.nout
        UFUNCS[name] = self

    def __repr__(self):
        return f"<ufunc 'cupy_{self.name}'>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind"):
        S.used[f"ufunc:{self.name}"] += 1
        if len(args) > self.nin:
            if out is not None:
                raise ValueError("cannot specify 'out' as both a positional and keyword argument")
            args, out = args[:self.nin], args[self.nin]
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.name}")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError("Output arguments must be cupy.ndarray")
        dtypes, scalars = _operands(args)
        common = result_dtype(dtypes, scalars) if dtype is None else np.dtype(dtype)
        inputs = _inputs(args, common)
        S.launch(f"ufunc:{self.name}")
        if out is not None:
            self._numpy(*inputs, out=out._a, casting=casting)
            return out
        return _new(self._numpy(*inputs))

    def at(self, a, indices, b=None):
        """a[indices] op= b, every index applied (duplicates add up): only add.at, only for the
        dtypes CuPy's atomicAdd supports, with CuPy's wrapping of out-of-range indices."""
        S.used[f"ufunc:{self.name}.at"] += 1
        S.not_in_fuse(f"{self.name}.at")
        if self.name != "add":
            raise NotImplementedError(f"`{self.name}.at` is not supported by the CuPy stand-in")
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        if a.dtype not in SCATTER_ADD_DTYPES:
            raise TypeError("cupy.add.at only supports int32, float16, float32, float64, uint32, "
                            "uint64, as data type")
        key, _ = _index_key(a._a, indices if isinstance(indices, tuple) else (indices,))
        if isinstance(b, ndarray):
            values = b._a
        elif _is_scalar(b):
            values = b
        elif isinstance(b, np.ndarray):
            S.host_to_device(b.nbytes)
            values = b
        else:
            raise _unsupported(b)
        S.launch("scatter_add")
        np.add.at(a._a, key, np.asarray(values).astype(a.dtype, copy=False))

# the operators' ufuncs, and the others braingen calls
_UFUNC_NAMES = ["add", "subtract", "multiply", "true_divide", "floor_divide", "power",
                "remainder", "negative", "positive", "absolute", "invert", "bitwise_and",
                "bitwise_or", "bitwise_xor", "less", "less_equal", "greater", "greater_equal",
                "equal", "not_equal",
                "sqrt", "square", "exp", "log", "log1p", "tanh", "floor", "maximum", "minimum"]
for _name in _UFUNC_NAMES:
    ufunc(_name, getattr(np, _name))
UFUNCS["divide"] = UFUNCS["true_divide"]
UFUNCS["abs"] = UFUNCS["absolute"]
UFUNCS["mod"] = UFUNCS["remainder"]


def _reduce(name, a, axis, out, keepdims, **kwargs):
    """A reduction (one kernel): always a device array, 0-d for a full reduction (CuPy never
    returns a NumPy scalar)."""
    S.used[f"reduce:{name}"] += 1
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    if out is not None and not isinstance(out, ndarray):
        raise TypeError("Output arguments must be cupy.ndarray")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    S.launch(f"reduce:{name}")
    result = getattr(np, name)(a._a, axis=axis, keepdims=keepdims, **kwargs)
    if out is not None:
        out._a[...] = result
        return out
    return _new(result)


# ---- module-level functions --------------------------------------------------------------------

def _device(a, what="array"):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}: the {what} must be a cupy.ndarray")
    return a._a


def _contains_device_array(obj):
    if isinstance(obj, ndarray):
        return True
    return isinstance(obj, (list, tuple)) and any(_contains_device_array(x) for x in obj)


@function()
def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    """A new device array: host data is copied to the device; a device array is copied on the
    device; a list of device arrays is stacked on the device."""
    if isinstance(obj, ndarray):
        S.launch("copy")
        return _wrap(np.array(obj._a, dtype=None if dtype is None else _check_dtype(dtype),
                              order=order, ndmin=ndmin, copy=True))
    if isinstance(obj, (list, tuple)) and _contains_device_array(obj):
        if not all(isinstance(x, ndarray) for x in obj):
            raise TypeError("Only cupy arrays (not a mix with host data) can be stacked here")
        stacked = stack(list(obj))
        return stacked if dtype is None else stacked.astype(dtype, copy=False)
    host = np.array(obj, dtype=dtype, order=order, ndmin=ndmin, copy=True)
    _check_dtype(host.dtype)
    S.host_to_device(host.nbytes)
    return _wrap(host)


@function()
def asarray(a, dtype=None, order=None):
    """`a` itself when it is already a device array of that dtype; else a copy on the device."""
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    return array(a, dtype=dtype, order=order or "K")


@function()
def ascontiguousarray(a, dtype=None):
    a_np = _device(a)
    dtype = a_np.dtype if dtype is None else _check_dtype(dtype)
    if a_np.flags.c_contiguous and dtype == a_np.dtype:
        return a
    S.launch("copy")
    return _wrap(np.ascontiguousarray(a_np, dtype=dtype))


def _fill_function(name, value):
    def create(shape, dtype=float, order="C"):
        S.launch("fill")
        return _wrap(np.full(shape, value, dtype=_check_dtype(dtype), order=order))
    create.__name__ = name
    return function(name)(create)


zeros = _fill_function("zeros", 0)
ones = _fill_function("ones", 1)


@function()
def empty(shape, dtype=float, order="C"):
    return _wrap(np.empty(shape, dtype=_check_dtype(dtype), order=order))


@function()
def full(shape, fill_value, dtype=None, order="C"):
    if isinstance(fill_value, ndarray):
        fill_value = fill_value._a
    elif not _is_scalar(fill_value):
        raise _unsupported(fill_value)
    S.launch("fill")
    return _wrap(np.full(shape, fill_value, dtype=dtype, order=order))


def _like_function(name, value):
    def create(a, dtype=None, order="K", shape=None):
        a_np = _device(a)
        S.launch("fill")
        return _wrap(np.full(a_np.shape if shape is None else shape, value,
                             dtype=a_np.dtype if dtype is None else _check_dtype(dtype)))
    create.__name__ = name
    return function(name)(create)


zeros_like = _like_function("zeros_like", 0)
ones_like = _like_function("ones_like", 1)


@function()
def empty_like(a, dtype=None, order="K", shape=None):
    a_np = _device(a)
    return _wrap(np.empty(a_np.shape if shape is None else shape,
                          dtype=a_np.dtype if dtype is None else _check_dtype(dtype)))


@function()
def arange(start, stop=None, step=1, dtype=None):
    for x in (start, stop, step):
        if x is not None and not _is_scalar(x):
            raise _unsupported(x)
    S.launch("arange")
    return _wrap(np.arange(start, stop, step, dtype=dtype))


@function()
def eye(N, M=None, k=0, dtype=float, order="C"):
    S.launch("fill", 2)                       # zeros, then the diagonal
    return _wrap(np.eye(N, M, k, dtype=_check_dtype(dtype), order=order))


@function()
def concatenate(tup, axis=0, out=None, dtype=None):
    arrays = [_device(a, "concatenated array") for a in tup]
    S.launch("concatenate")
    result = np.concatenate(arrays, axis=axis, dtype=dtype)
    if out is not None:
        _device(out)[...] = result
        return out
    return _wrap(result)


@function()
def stack(tup, axis=0, out=None, dtype=None):
    arrays = [_device(a, "stacked array") for a in tup]
    S.launch("concatenate")
    result = np.stack(arrays, axis=axis, dtype=dtype)
    if out is not None:
        _device(out)[...] = result
        return out
    return _wrap(result)


@function(fusable=True)
def where(condition, x=None, y=None):
    """where(c, x, y): elementwise choice (one kernel), x and y promoted as a ufunc's inputs.
    (where(c) alone, CuPy's nonzero, is not in the stand-in: braingen does not use it.)"""
    if x is None or y is None:
        raise NotImplementedError("the CuPy stand-in has where(condition, x, y) only")
    dtypes, scalars = _operands([x, y])
    if not isinstance(condition, ndarray) and not _is_scalar(condition):
        raise _unsupported(condition)
    common = result_dtype(dtypes, scalars)
    xa, ya = _inputs([x, y], common)
    cond = condition._a if isinstance(condition, ndarray) else np.asarray(condition)
    S.launch("where")
    return _new(np.where(cond, xa, ya))


@function(fusable=True)
def clip(a, a_min=None, a_max=None, out=None):
    """clip(a, lo, hi): one kernel, lo and hi promoted with a as ufunc inputs."""
    args = [x for x in (a, a_min, a_max) if x is not None]
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    dtypes, scalars = _operands(args)
    common = result_dtype(dtypes, scalars)
    inputs = _inputs(args, common)
    low = inputs[1] if a_min is not None else None
    high = inputs[-1] if a_max is not None else None
    S.launch("ufunc:clip")
    if out is not None:
        np.clip(inputs[0], low, high, out=_device(out))
        return out
    return _new(np.clip(inputs[0], low, high))


@function()
def matmul(a, b, out=None):
    """a @ b on the device (one cuBLAS call): device arrays only, no scalars."""
    for x in (a, b):
        if _is_scalar(x):
            raise ValueError("Scalar operands are not allowed, use '*' instead")
        _device(x)
    S.launch("matmul")
    if out is not None:
        np.matmul(a._a, b._a, out=_device(out))
        return out
    return _new(np.matmul(a._a, b._a))


@function()
def take(a, indices, axis=None, out=None):
    """a.take(indices, axis): a gather (one kernel), out-of-range indices wrapped as CuPy does."""
    a_np = _device(a)
    if isinstance(indices, ndarray):
        index = indices._a
    elif _is_scalar(indices):
        index = np.asarray(indices)
    else:
        index = np.asarray(indices)
        S.host_to_device(index.nbytes)
    if index.dtype.kind not in "iu":
        raise IndexError("arrays used as indices must be of integer type")
    size = a_np.size if axis is None else a_np.shape[axis]
    S.launch("take")
    result = np.take(a_np, np.mod(index, size) if size else index, axis=axis)
    if out is not None:
        _device(out)[...] = result
        return out
    return _new(result)


@function()
def pad(array, pad_width, mode="constant", constant_values=0):
    a_np = _device(array)
    if mode != "constant":
        raise NotImplementedError("the CuPy stand-in pads with a constant only")
    S.launch("pad", 2)                       # fill, then copy the array in
    return _wrap(np.pad(a_np, pad_width, mode="constant", constant_values=constant_values))


@function()
def broadcast_to(array, shape):
    return _wrap(np.broadcast_to(_device(array), shape))


def _reduction_function(name):
    def reduce_(a, axis=None, dtype=None, out=None, keepdims=False):
        kwargs = {} if name in ("max", "min", "argmax", "argmin") else {"dtype": dtype}
        return _reduce(name, a, axis, out, keepdims, **kwargs)
    reduce_.__name__ = name
    return function(name, fusable=True)(reduce_)


for _name in ("sum", "mean", "max", "min", "argmax", "argmin"):
    _reduction_function(_name)           # in FUNCTIONS only: not to hide Python's max, sum, ...


for _name, _ufunc in UFUNCS.items():
    FUNCTIONS[_name] = _ufunc
