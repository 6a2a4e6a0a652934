"""Sample data and the shipped detector's recipe, for the demo, the examples and the tests (no downloads).

``shapes``: scenes of coloured shapes on scikit-image's photographs with exact boxes, and YOLO datasets
of them; ``digits``: scikit-learn's digits written as image folders; ``detector``: the shipped shapes
detector's Keras architecture, training targets and loss (TensorFlow loads only when one is built);
``segmenter`` and ``posenet``: tiny semantic segmentation and landmark networks trained on those scenes (exact masks
and triangle corners); ``tracks``: generated tracking clips (boxes with ground-truth identities, degraded detections) and
their MOT scores.
The shipped weights are in ``edge_sdk.converters.assets``.
"""
