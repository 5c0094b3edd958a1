"""Example: latency tests for your own suite with the harness pytest plugin.

pytest-benchmark runs underneath.

    pytest examples/test_model_latency.py --harness-device host --benchmark-autosave
    pytest examples/test_model_latency.py --harness-device host --benchmark-compare \
        --benchmark-compare-fail=median:5%

Replace the model names with your own .onnx files, zoo names and variants, or factories
(``harness_latency("pkg.mod:build", input_shape="3x32x32")``), and the budgets with yours.
"""


def test_resnet20_compressed_is_faster_than_its_budget(harness_latency):
    stats = harness_latency("resnet20", variant="dc-1x1")  # a zoo variant; or an .onnx path
    assert stats.median > 0
    assert stats.p99 < 50.0  # ms: a generous budget for any CPU; put your device's target here


def test_lenet5_latency(harness_latency):
    stats = harness_latency("lenet5")
    assert stats.n >= 10
