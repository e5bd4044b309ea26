# Object detection (mmdet) to onnxruntime, static 128x128 input (the test pipeline needs a
# Resize; mmdeploy replaces its scale by `input_shape`). Outputs: `dets` (N, K, 5) boxes with
# scores and `labels` (N, K), after mmdeploy's batched NMS.
_base_ = ['./_base_onnxruntime_static.py']
onnx_config = dict(output_names=['dets', 'labels'], input_shape=[128, 128])
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,  # for YOLOv3
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1,
    ))
