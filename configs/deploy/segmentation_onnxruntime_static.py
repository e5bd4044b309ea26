# Semantic segmentation (mmseg) to onnxruntime, static 192x192 input.
# `with_argmax=False`: the graph returns the logits (N, num_classes, H, W), so that onnxruntime
# can be compared with PyTorch numerically (the argmax is cheap to apply afterwards).
# mmdeploy honours `input_shape` only by rewriting a Resize of the test pipeline (and its SDK
# meta for mmseg requires one): rep_mm.deploy adds `Resize(scale=input_shape, keep_ratio=False)`
# when the model config's test pipeline has none. PSPNet's adaptive-pool rewrite needs the
# stride-32 map divisible by the pool scales (1, 2, 3, 6): 192x192 gives a 6x6 map.
_base_ = ['./_base_onnxruntime_static.py']
onnx_config = dict(input_shape=[192, 192])
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
