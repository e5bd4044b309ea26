# Digit scenes for MMSegmentation: 64x64 canvases of scikit-learn's handwritten digits with
# per-pixel labels (0 background, digit d -> d + 1; 11 classes). Write them first with
# `python -m rep_mm.datasets.digit_scenes data/digit_scenes` (rep_mm.datasets.prepare_digit_scenes)
# or move them with --cfg-options data_root=DIR (the configs' rep_mm loops move every
# dataset that uses this data_root, with any train / test script). Val scenes use digit images unseen in training.
dataset_type = 'BaseSegDataset'
data_root = 'data/digit_scenes'
crop_size = (64, 64)
metainfo = dict(
    classes=('background', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
             [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
             [128, 128, 128]])

# no flips or rotations: a mirrored digit is another symbol (or none)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 data_prefix=dict(img_path='images/train', seg_map_path='annotations/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                 data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
