# Shared part of rep_mm's onnxruntime deploy configs (static shapes), read by mmdeploy 1.3.1.
# Exporter: torch.onnx's TorchScript exporter (`dynamo=False`, opset 11). rep_mm.deploy passes
# `dynamo` to torch.onnx.export (mmdeploy itself does not); torch 2.14 defaults to the dynamo
# exporter, which ignores mmdeploy's symbolic rewriters (e.g. the NMS of detectors).
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    dynamo=False,  # rep_mm key: False -> TorchScript exporter (works for all three tasks)
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=False)
backend_config = dict(type='onnxruntime')
