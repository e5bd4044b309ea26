# RepVGG-A0 classifier for ImageNet-1k: rep_mm.RepVGG backbone (training form, official key
# names), global average pooling, linear head. Leaf configs change `arch` and `in_channels`.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='rep_mm.RepVGG', arch='A0', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1280,  # int(512 * 2.5)
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5),
    ),
)
