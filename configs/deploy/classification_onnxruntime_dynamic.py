# Image classification (mmpretrain) to onnxruntime with dynamic batch, height and width
# (TorchScript exporter, `dynamic_axes`). Exported at 32x32 (the digits); the classifier's
# global pooling takes any size. `rep-mm export` checks the graph in onnxruntime at the exported
# size and at other sizes with batch 2 against PyTorch (report.json: `dynamic`).
_base_ = ['./classification_onnxruntime_static.py']
onnx_config = dict(
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'output': {0: 'batch'}})
