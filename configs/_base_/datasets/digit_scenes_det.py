# Digit scenes for MMDetection: 64x64 canvases of scikit-learn's handwritten digits with COCO
# boxes (category = digit, names '0'..'9'). Write them first with
# `python -m rep_mm.datasets.digit_scenes data/digit_scenes` (rep_mm.datasets.prepare_digit_scenes)
# or move them with --cfg-options data_root=DIR (the configs' rep_mm loops move every
# dataset that uses this data_root, with any train / test script). Val scenes use digit images unseen in training.
dataset_type = 'CocoDataset'
data_root = 'data/digit_scenes'
metainfo = dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))

# the scenes are small: detect at 2x (128x128). No flips: a mirrored digit is another symbol.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs'),
]
# the Resize is needed at test time too: dense heads read `scale_factor` from the metainfo
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    # 'instances' (the dataset's boxes) lets CocoMetric build its ground truth without ann_file
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                    'instances')),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='coco/instances_train.json', data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='coco/instances_val.json', data_prefix=dict(img='images/val/'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
# without ann_file CocoMetric builds the ground truth from the packed 'instances', so moving
# data_root (--cfg-options data_root=DIR) moves the evaluation data too
val_evaluator = dict(type='CocoMetric', metric='bbox', format_only=False)
test_evaluator = val_evaluator
