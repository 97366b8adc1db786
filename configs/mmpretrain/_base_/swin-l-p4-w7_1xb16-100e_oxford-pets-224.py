# Oxford-IIIT Pets: data/oxford-iiit-pet/{images/,annotations/trainval.txt,annotations/test.txt}
_base_ = './swin-l-p4-w7_1xb16-100e_cls-224.py'
num_classes = 37
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
data_root = 'data/oxford-iiit-pet'
train_dataloader = dict(dataset=dict(type='OxfordIIITPet', data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type='OxfordIIITPet', data_root=data_root, split='test'))
test_dataloader = val_dataloader
