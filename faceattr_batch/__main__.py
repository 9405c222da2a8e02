from faceattr_batch.cli import app

app(prog_name="faceattr-batch")
