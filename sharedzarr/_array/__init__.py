"""The parts of :class:`sharedzarr.Array`, one concern per module.

Each module adds one mixin on top of the one below it; imports run one way:

- ``_base``: the handle's state, metadata upkeep and coherence, the write operation
  (:class:`~sharedzarr._array._base.WriteOp`), the cached chunk views;
- ``_gather``: advanced-index reads (``a[idx]``, masks, ``oindex``, ``vindex``);
- ``_read``: slice reads (``get_slice``, ``a[...]``, ``np.asarray``);
- ``_write``: slice and advanced-index writes, ``oindex``/``vindex``, ``atomic()``;
- ``_chunks``: ``read_chunk``, ``write_chunk``, ``delete_chunk``, ``list_chunks``;
- ``_shape``: ``resize``, ``append``, ``attrs`` (with ``_attributes``);

and :mod:`sharedzarr.array` is the facade: the ``Array`` class, its properties and
lifecycle, ``create`` and ``open``.
"""
