"""A PyTorch model, exported as PyTorch users do (``torch.onnx.export``), converted for every target.

PyTorch is not installed in CI (its wheels pull gigabytes of CUDA libraries there); this runs
wherever it is importable, and is skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_sdk.bundle import open_bundle  # noqa: E402
from edge_sdk.converters import convert  # noqa: E402

pytestmark = pytest.mark.slow


class DigitsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.SiLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.SiLU(), torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        return torch.softmax(self.head(torch.flatten(self.features(x), 1)), dim=1)


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    from support.digits import model_inputs

    torch.manual_seed(0)
    model = DigitsNet()
    x = torch.from_numpy(np.transpose(model_inputs(digits["images"][digits["train_idx"]]), (0, 3, 1, 2)).copy())
    y = torch.from_numpy(digits["labels"][digits["train_idx"]].astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(8):
        for i in range(0, len(x), 32):
            optimizer.zero_grad()
            loss = torch.nn.functional.nll_loss(torch.log(model(x[i : i + 32]) + 1e-9), y[i : i + 32])
            loss.backward()
            optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("torch") / "digits.onnx"
    torch.onnx.export(model, torch.rand(1, 3, 32, 32), str(path), opset_version=17, input_names=["images"],
                      output_names=["probs"], dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
                      dynamo=False)
    return path


@pytest.mark.parametrize("profile", ["rpi5", "coral-usb", "intel-cpu"])
def test_a_torch_onnx_export_converts_within_budget(exported, digits, profile, tmp_path):
    result = convert(exported, profile=profile, out=tmp_path / "b", calib=digits["calib"], val=digits["val"],
                     compile=False)
    accuracy = result.report.accuracy
    assert result.report.source_format == "onnx" and result.report.head == "classification"
    assert accuracy.reference.top1 > 0.9 and accuracy.within_budget
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.preprocessing.layout == ("NCHW" if profile == "intel-cpu" else "NHWC")
