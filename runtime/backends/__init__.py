"""Inference backends (PyTorch, ONNX Runtime, TensorRT, AOTInductor) behind one protocol and a registry."""
