"""Indexing a face-image tree, below the pipelines (``index`` and ``train`` use it): parse the names (``parse``),
stat the files (``sizes``), hash and probe them (``hashing``), group duplicates (``duplicates``), all per-file work
in the package's one kind of process pool (``data.batches.process_pool``); ``build`` puts them together
(``build_index``, ``write_index``)."""
