"""Export: model bundles, ONNX / TensorRT / AOTInductor engines."""
