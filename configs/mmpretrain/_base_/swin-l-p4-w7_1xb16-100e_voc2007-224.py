# VOC2007 as single-label (largest object's class): data/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}
_base_ = './swin-l-p4-w7_1xb16-100e_cls-224.py'
num_classes = 20
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
data_root = 'data/VOCdevkit/VOC2007'
train_dataloader = dict(dataset=dict(type='mona_mm.VOC2007SingleLabel', data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type='mona_mm.VOC2007SingleLabel', data_root=data_root, split='test'))
test_dataloader = val_dataloader
