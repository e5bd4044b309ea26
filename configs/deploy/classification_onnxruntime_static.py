# Image classification (mmpretrain) to onnxruntime, static 32x32 input (the digits configs).
# Output `output`: (N, num_classes) softmax scores (mmdeploy's classifier rewrite).
_base_ = ['./_base_onnxruntime_static.py']
onnx_config = dict(input_shape=[32, 32])
codebase_config = dict(type='mmpretrain', task='Classification')
