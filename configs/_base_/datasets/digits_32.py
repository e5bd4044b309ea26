# scikit-learn's handwritten digits at 32x32 (rep_mm.datasets.prepare_digits writes the tree:
# `python -m rep_mm.datasets.digits data/digits`). Override the location with
# --cfg-options data_root=... (the configs' rep_mm loops move every dataset that uses
# this data_root, with any train / test script).
dataset_type = 'CustomDataset'
data_root = 'data/digits'

data_preprocessor = dict(
    num_classes=10,
    # grayscale PNGs loaded as 3 identical channels; statistics of the training split
    mean=[78.9, 78.9, 78.9],
    std=[89.0, 89.0, 89.0],
    to_rgb=False)

# no flips: a mirrored digit is another symbol (or none)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,  # the toolboxes' train.py default True needs workers
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='test',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
