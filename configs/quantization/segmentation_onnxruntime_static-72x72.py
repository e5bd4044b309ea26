# Segmentation to onnxruntime at 72x72 (the int8 benchmark's digit-scene deploy config): the
# shipped static config resizes the 64 px scenes to 192 px (three times the training scale);
# 72 px is the closest size whose stride-4 map (18x18) PSPNet's adaptive-pool rewrite accepts
# (divisible by the pool scales 1, 2, 3, 6).
_base_ = ['../deploy/segmentation_onnxruntime_static.py']
onnx_config = dict(input_shape=[72, 72])
