"""Small real models the tests build: TFLite detectors, ONNX detectors in every head layout, an ONNX classifier."""
