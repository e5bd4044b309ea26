# Semantic segmentation (mmseg) to onnxruntime with a dynamic batch (TorchScript exporter,
# `dynamic_axes`), 192x192 input, logits out (`with_argmax=False`).
# Height and width stay static: mmdeploy's adaptive-pool rewrite (PSPNet's pooling) computes
# its kernel from the traced size, so a graph exported with dynamic H/W runs at other sizes but
# computes wrong logits (measured: max rel error 0.28 at 96x96, 0.12 at 288x192 vs PyTorch).
_base_ = ['./segmentation_onnxruntime_static.py']
onnx_config = dict(
    dynamic_axes={
        'input': {0: 'batch'},
        'output': {0: 'batch'}})
