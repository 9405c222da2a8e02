"""Indexing a face-image tree: parse the names (``parse``), stat the files (``sizes``), hash and probe them
(``hashing``), group duplicates (``duplicates``); ``build`` puts them together (``build_index``, ``write_index``)."""
