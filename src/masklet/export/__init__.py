"""Export of masklet models to other runtimes (``masklet.export.onnx``, extra ``masklet[onnx]``)."""
