"""What predict's summary and the report are made of, below the pipelines: ``summary`` reads a predictions Parquet
once and counts it; ``folder`` writes the report folder from that one read; ``figures`` and ``page`` draw it.
`predict --report` and `faceattr-batch report` both call these; neither pipeline imports the other."""
