"""Files that ship with the converter: the trained shapes detector and its measured scores."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DETECTOR = HERE / "shapes_detector.keras"
DETECTOR_INFO = HERE / "shapes_detector.json"
