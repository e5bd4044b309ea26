# Object detection (mmdet) to onnxruntime with dynamic batch, height and width (TorchScript
# exporter, `dynamic_axes`), exported at 128x128; `dets` (N, K, 5) and `labels` (N, K) with a
# dynamic number K of kept boxes. Sizes should be multiples of 32 (pad_size_divisor).
_base_ = ['./detection_onnxruntime_static.py']
onnx_config = dict(
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'dets': {0: 'batch', 1: 'num_dets'},
        'labels': {0: 'batch', 1: 'num_dets'}})
